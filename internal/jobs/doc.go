// Package jobs holds the broker's periodic work. Each job is a small SQL statement run on a
// jittered ticker with a timeout; jobs that change shared state take a transaction-scoped
// advisory lock so that, with many instances, each runs once per period across the fleet.
package jobs
