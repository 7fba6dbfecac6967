"""What every stage shares: params and their schema, errors, the command line, paths, file writing."""
