// Package presence holds the rules for presences that need no socket: the statuses a
// presence may take and how a status write is ranked (WriteStatus), what a hook signal says
// and which presences it is for (ParseHookBody, HookTargets, HookActionFor, KeepPending),
// and ending a presence in the database (End). Package session, which holds the sockets,
// calls these and does what needs its sockets and notifications (waking a presence, closing
// a socket, announcing peer_left); package jobs ends presences through the hub.
//
// Concurrency: everything here is a pure function or a statement (or one transaction) on
// the queries or pool it is given; nothing holds state, so any goroutine may call anything.
package presence
