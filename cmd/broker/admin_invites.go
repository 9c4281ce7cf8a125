package main

// adminInviteCommands are `broker admin invite …`.
func adminInviteCommands() []*command { return nil }
