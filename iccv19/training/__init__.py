"""Glue between Lightning and the world: teachers, loggers, images, checkpoint IO, user-facing errors."""
