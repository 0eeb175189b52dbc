#!/usr/bin/env bash
# Starts the real proxy in front of trueup's files, for trying trueup by hand: Traefik
# (its file provider watching ROUTES_DIR, one HTTP entrypoint) and Caddy as the static web
# server (root = trueup's ROOT, following symlinks), both on loopback, in the background.
# Safe to run twice: what already runs is left running.
#
#   scripts/proxy.sh [start]   install what is missing, start what is not running
#   scripts/proxy.sh stop      stop both
#   scripts/proxy.sh status    say what runs
#
# Environment (defaults in brackets):
#   ROOT          trueup's managed root [$TRUEUP_ROOT or /var/www]
#   ROUTES_DIR    the route files [$TRUEUP_ROUTES_DIR or /etc/traefik/dynamic]
#   TRAEFIK_ADDR  Traefik's entrypoint [127.0.0.1:8080]
#   STATIC_ADDR   the static web server [127.0.0.1:8081]
#   STATE_DIR     pid files and logs [${TMPDIR:-/tmp}/trueup-proxy]
#   TRAEFIK       the traefik binary [.venv-tools/bin/traefik, from .ci/install]
#   CADDY         the caddy binary [caddy]
#
# A project whose webroot link is ROOT/webroot/PROJECT is served at
# http://STATIC_ADDR/webroot/PROJECT: that is the upstream to give trueup.
set -euo pipefail
top="$(cd "$(dirname "$0")/.." && pwd)"

ROOT="${ROOT:-${TRUEUP_ROOT:-/var/www}}"
ROUTES_DIR="${ROUTES_DIR:-${TRUEUP_ROUTES_DIR:-/etc/traefik/dynamic}}"
TRAEFIK_ADDR="${TRAEFIK_ADDR:-127.0.0.1:8080}"
STATIC_ADDR="${STATIC_ADDR:-127.0.0.1:8081}"
STATE_DIR="${STATE_DIR:-${TMPDIR:-/tmp}/trueup-proxy}"
TRAEFIK="${TRAEFIK:-$top/.venv-tools/bin/traefik}"
CADDY="${CADDY:-caddy}"

# The pid in NAME.pid when that process still runs the program it was started as.
running() {
  local pidfile="$STATE_DIR/$1.pid" pid
  [ -f "$pidfile" ] || return 1
  pid="$(cat "$pidfile")"
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
  # A pid can be reused: check that it is still the program that was started.
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$2" || return 1
  echo "$pid"
}

# Waits until ADDR accepts connections, or the process dies, or 15 seconds pass.
wait_for() {
  local name="$1" pid="$2" addr="$3" host port i
  host="${addr%:*}" port="${addr##*:}"
  for i in $(seq 150); do
    if (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null; then return 0; fi
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "$name exited; the end of $STATE_DIR/$name.log:" >&2
      tail -n 20 "$STATE_DIR/$name.log" >&2
      return 1
    fi
    sleep 0.1
  done
  echo "$name does not answer on $addr after 15 s; see $STATE_DIR/$name.log" >&2
  return 1
}

# start NAME MARKER ADDR COMMAND...: starts COMMAND in its own session, logging to
# STATE_DIR/NAME.log, unless NAME already runs.
start_one() {
  local name="$1" marker="$2" addr="$3" pid
  shift 3
  if pid="$(running "$name" "$marker")"; then
    echo "$name already runs (pid $pid; to change its settings, stop it first)"
    return 0
  fi
  setsid "$@" >"$STATE_DIR/$name.log" 2>&1 </dev/null &
  pid=$!
  echo "$pid" >"$STATE_DIR/$name.pid"
  wait_for "$name" "$pid" "$addr"
  echo "$name started (pid $pid)"
}

stop_one() {
  local name="$1" marker="$2" pid i
  if pid="$(running "$name" "$marker")"; then
    kill "$pid"
    for i in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
    echo "$name stopped (pid $pid)"
  else
    echo "$name was not running"
  fi
  rm -f "$STATE_DIR/$name.pid"
}

case "${1:-start}" in
  start)
    if [ ! -x "$TRAEFIK" ] || ! command -v "$CADDY" >/dev/null 2>&1; then
      bash "$top/.ci/install"
    fi
    mkdir -p "$STATE_DIR" "$ROOT" "$ROUTES_DIR"
    ROOT="$(cd "$ROOT" && pwd)" ROUTES_DIR="$(cd "$ROUTES_DIR" && pwd)"
    start_one traefik providers.file.directory "$TRAEFIK_ADDR" \
      "$TRAEFIK" \
      "--entrypoints.web.address=$TRAEFIK_ADDR" \
      "--providers.file.directory=$ROUTES_DIR" \
      --providers.file.watch=true \
      --global.checknewversion=false \
      --global.sendanonymoususage=false \
      --log.level=INFO
    # Caddy keeps its data and config under HOME and XDG_*: give it the state folder.
    start_one static file-server "$STATIC_ADDR" \
      env HOME="$STATE_DIR/caddy" XDG_DATA_HOME="$STATE_DIR/caddy" XDG_CONFIG_HOME="$STATE_DIR/caddy" \
      "$CADDY" file-server --root "$ROOT" --listen "$STATIC_ADDR"
    echo
    echo "traefik: http://$TRAEFIK_ADDR (route files in $ROUTES_DIR)"
    echo "static:  http://$STATIC_ADDR (root $ROOT; a project's upstream is http://$STATIC_ADDR/webroot/PROJECT)"
    echo "logs:    $STATE_DIR/{traefik,static}.log"
    echo "stop:    STATE_DIR=$STATE_DIR $0 stop"
    ;;
  stop)
    stop_one traefik providers.file.directory
    stop_one static file-server
    ;;
  status)
    for name in traefik static; do
      marker=$([ "$name" = traefik ] && echo providers.file.directory || echo file-server)
      if pid="$(running "$name" "$marker")"; then echo "$name runs (pid $pid)"; else echo "$name is not running"; fi
    done
    ;;
  *)
    echo "usage: $0 [start|stop|status]" >&2
    exit 2
    ;;
esac
