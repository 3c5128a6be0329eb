"""Settings for the whole suite."""

import signal

# A shell starting pytest in the background (`pytest &`, nohup, a CI step without a terminal) hands
# it SIGINT ignored, and every command the tests start would inherit that: the Ctrl-C tests would
# send a signal nobody hears. Tests stand where a user's terminal stands, so Ctrl-C is heard again.
signal.signal(signal.SIGINT, signal.default_int_handler)
