"""The Textual chat UI: `chatbot` with no command opens it (`run_tui` in `app.py`)."""
