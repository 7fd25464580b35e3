// Roster console
