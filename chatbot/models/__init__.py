"""The models a user has: where they are on disk, and what each one is."""
