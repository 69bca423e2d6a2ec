"""The timings the launcher's process managers share, each defined once; docs and log lines quote them."""

# How often a worker's event loop proves it is alive: a beat file (gunicorn, granian) or the
# supervisor's link (uvicorn, hypercorn). A worker silent for APP_WORKER_TIMEOUT is killed.
HEARTBEAT_SECONDS = 0.5
# How often a worker's memory is compared with APP_MAX_WORKER_MEMORY.
MEMORY_CHECK_SECONDS = 0.5
# A process still running this long after its graceful timeout gets SIGKILL. An int: gunicorn
# takes its graceful_timeout only as a whole number of seconds.
KILL_BACKSTOP_SECONDS = 2
# A new worker reports ready once it serves; an old one it replaces stops then, or after this
# long without the report (a worker that failed to boot stops the server).
WORKER_BOOT_BOUND_SECONDS = 30.0
# From a worker's "ready" (the end of its lifespan start-up) to its accepting: the server starts
# its listener right after, in the same thread, so the old worker is stopped only then.
ACCEPTING_SETTLE_SECONDS = 0.1
# From a stopping worker's last accept to its server's own stop, which closes every connection with
# no request in progress: one accepted just before finishes its TLS handshake and delivers its
# first request meanwhile (uvicorn, hypercorn, gunicorn's two workers; not granian).
ACCEPTED_SETTLE_SECONDS = 0.2
# How often the TLS files are read for a change (deploy/certificate_watch.py): a renewed
# certificate is served by new connections this long after it lands, plus one worker replacement.
CERTIFICATE_POLL_SECONDS = 1.0
