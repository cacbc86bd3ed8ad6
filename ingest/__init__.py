"""Intake stage: sources (mailboxes, SMTP, MTA pipe, files) that hand raw messages to the parsers."""
