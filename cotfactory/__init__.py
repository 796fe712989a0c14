"""cotfactory: manufacture chain-of-thought data with a teacher and distil it into a student.

The data's path through the code: problem (``problems``) → request (``plan``, ``prompts``) →
sample (``teachers``) → stored in the run's SQLite file (``store``) → exported (``export``).
"""

__version__ = "0.1.0"
