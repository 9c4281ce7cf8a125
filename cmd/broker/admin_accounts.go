package main

// adminAccountCommands are `broker admin user …` and `broker admin token …`.
func adminAccountCommands() []*command { return nil }
