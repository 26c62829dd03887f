"""Measurements of nutq's models (`nutq eval`): beside `serve`, never imported by the runtime."""
