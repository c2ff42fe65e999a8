#!/usr/bin/env bash
# cron_alert.sh - run clip-ingest from cron and raise an alert when it needs attention.
#
#   # crontab: every hour, arguments are passed to clip-ingest unchanged
#   17 * * * *  /opt/clip-ingest/examples/cron_alert.sh --config /etc/clip-ingest/clip-ingest.toml --metrics-file /var/lib/clip-ingest/metrics/clip-ingest.prom
#   (one line: cron has no continuation; the metrics file holds every run's outcome as Prometheus
#   gauges, docs/deployment.md)
#
# Exit codes of clip-ingest and what this wrapper does with them:
#   0  all done                          -> nothing, exit 0
#   3  finished, some files failed       -> alert (files are listed in the dead-letter file and
#                                           retried next run; `clip-ingest quarantine --failed`
#                                           acknowledges files that will never decode), exit 0 so
#                                           cron does not mail a failure
#   5  finished, --prune refused         -> alert (a source was empty or on another filesystem, e.g.
#                                           a disk not mounted, or over --max-prune), exit 0
#   1  fatal (store unreachable, model)  -> alert + message on stderr, exit 1 (cron mails stderr)
#   2  usage / configuration error       -> alert + message on stderr, exit 2
#   4  another run holds the lock        -> alert + message on stderr, exit 4
#
# The alert goes to syslog via `logger -t clip-ingest` unless CLIP_INGEST_ALERT_CMD is set: that
# command is run by `sh -c` with the message in $CLIP_INGEST_ALERT_MESSAGE and the exit code in
# $CLIP_INGEST_EXIT_CODE (e.g. CLIP_INGEST_ALERT_CMD='mail -s "$CLIP_INGEST_ALERT_MESSAGE" ops@example.com </dev/null').
# CLIP_INGEST_BIN selects the clip-ingest executable (default: clip-ingest on PATH).
set -u

bin="${CLIP_INGEST_BIN:-clip-ingest}"

alert() {
    local code="$1" message="$2"
    if [ -n "${CLIP_INGEST_ALERT_CMD:-}" ]; then
        CLIP_INGEST_ALERT_MESSAGE="$message" CLIP_INGEST_EXIT_CODE="$code" sh -c "$CLIP_INGEST_ALERT_CMD" \
            || echo "cron_alert.sh: the alert command failed" >&2
    else
        logger -t clip-ingest -p "user.$([ "$code" = 3 ] || [ "$code" = 5 ] && echo warning || echo err)" -- "$message" \
            || echo "cron_alert.sh: logger failed: $message" >&2
    fi
}

"$bin" "$@"
rc=$?

case "$rc" in
    0) exit 0 ;;
    3) alert 3 "clip-ingest finished but some files failed (exit 3); see the dead-letter file"
       echo "clip-ingest: some files failed (exit 3), alert sent"
       exit 0 ;;
    5) alert 5 "clip-ingest finished but refused to prune (exit 5): a source is empty or on another filesystem (a disk not mounted?), or too much would go; see its log and clip-ingest status"
       echo "clip-ingest: prune refused (exit 5), alert sent"
       exit 0 ;;
    1) reason="fatal error (store unreachable, model mismatch or model not loadable)" ;;
    2) reason="usage or configuration error" ;;
    4) reason="another run holds the lock on this collection" ;;
    *) reason="unexpected exit code" ;;
esac
message="clip-ingest FAILED with exit $rc: $reason"
alert "$rc" "$message"
echo "$message" >&2
exit "$rc"
