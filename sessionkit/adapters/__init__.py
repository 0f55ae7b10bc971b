"""Thin translations between frameworks and `SessionManager`: no lifecycle rules here."""
