"""Constants the serving tests share (a module of its own: `from conftest import ...` picks whichever conftest
pytest imported last, so it broke when another directory's tests were collected after this one's)."""

SYSTEM = "Be brief."  # short: the prompts fit the 64-token slots
