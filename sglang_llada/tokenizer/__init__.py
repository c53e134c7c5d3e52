"""Stage 2, the request front end (TokenizerManager, in the HTTP server process): every generate
request is checked before it is queued; a refusal is an HTTP 400 that names the field and what to
do (`request_checks.py`, over the field checks of `field_checks.py`)."""
