//! Parser for OpenNebula's `context.sh` (never executed) and loading of the context files
//! (`context.sh`, `token.txt`, FILES_DS files) from a directory. Issue #2.
