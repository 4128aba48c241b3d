"""Command-line front door: parse -> config -> library call -> format."""
