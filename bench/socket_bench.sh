#!/usr/bin/env bash
# socket_bench.sh — the shared WebSocket load harness against our server (chatsite.asgi under daphne),
# and against the harness's reference servers ("peers") in the same run, into one report.
#
# Copies ../shared/bench (read-only, never into this repo) to a scratch folder outside the repo,
# installs it there (npm; its Python venv is cached in $CACHE), starts our server on
# 127.0.0.1:$PORT in the chosen configuration, signs up the bench users (the harness's
# prepare_chat.py), runs the scenarios with `run.sh external` and PROTO=chat, stops the server,
# then runs the same scenarios on each of $PEERS with `run.sh <peer> <scenario>`, and prints the
# harness's Markdown report: every row, ours and the peers', in one table.
# Figures and their reading: docs/performance.md, "Socket throughput (load harness)".
#
#   bench/socket_bench.sh [pg-redis|embedded|prod2] [SCENARIO...]
#   bench/socket_bench.sh pg-redis S1 S3 S2 S4     # the default
#   bench/socket_bench.sh embedded S1 S3
#   bench/socket_bench.sh prod2 S1 S3              # the production recipe: 2 processes behind nginx
#   bench/socket_bench.sh pg-redis S3low          # S3, but the ramp starts at $LOW_RAMP_START msg/s
#   PEERS="" bench/socket_bench.sh pg-redis S1     # ours only
#
# Configurations:
#   pg-redis  DATABASE_URL=$PG_URL (database created if missing, migrated), REDIS_URL=$BENCH_REDIS_URL
#             (the settings' channel layer, presence and rate limits in Redis); our Redis keys only
#             (prefixes bench: and benchasgi) are deleted before every server start. One daphne.
#   prod2     the same database and Redis, served by scripts/serve-prod: $PROD_WORKERS (2) daphne
#             processes on 127.0.0.1:$PORT+1.. behind nginx on $PORT (deploy/nginx.conf). The
#             harness samples the CPU and memory of serve-prod's process tree: the daphnes and
#             nginx. Users and cookies are pg-redis's (same database, same SECRET_KEY).
#   embedded  SQLite (WAL, the settings' own options) + in-memory channel layer, one process. The
#             SQLite file lives in $CACHE/embedded/ (DATABASE_URL=sqlite:///...), not in data/.
# All run with DEBUG=false (static files collected into STATIC_ROOT first), no HTTPS redirect,
# non-secure cookies, LOG_LEVEL=WARNING, daphne -v 0 with an access log file, listen backlog 1024
# (as the anchors' daphne peers).
#
# Peers (PEERS, default "daphne-redis-pg uvicorn-pubsub"; any name run.sh knows): the harness's
# tutorial consumer storing each message in PostgreSQL, and the fastest tutorial server, which
# stores nothing. They run after ours in each round, on 127.0.0.1:$PEER_PORT, with the harness's
# own Python venv, and append to the same raw.jsonl. daphne-redis-pg needs the PostgreSQL role
# bench/bench (created here with the superuser of $PG_URL if missing) and its own database
# $PEER_PGDATABASE: not chatbench, which is ours, and whose chat_message table is not the
# tutorial's. Its Redis is the harness's database 13, which run.sh empties before each peer.
# S3low runs on a peer as S3 from the same first step.
#
# Rate limits: S1 runs with the product's defaults (burst 10, refill 1/s: S1's 1 msg/s per user
# fits). S2, S3, S3low and S4 run on a server started with CHAT_POST_BURST=$RAISED_BURST and
# CHAT_POST_REFILL_PER_SECOND=$RAISED_REFILL (S2 sends 5 msg/s per user, the S3 ramp passes 1/s).
#
# Like the anchors (run.sh starts and stops its peer per scenario), every scenario gets a freshly
# started server, so no backlog of an overloaded run leaks into the next one.
#
# Users: each scenario family has its own users, so that every user is in exactly one room
# (memberships persist, and a member's socket gets all its rooms): bench0..199 in bkr0..r9 (S1, S3),
# benchs2-0..199 in bk2r0 (S2), benchs4-0..199 in bk4r0..r99 (S4). Signing up 600 users costs
# minutes (one password hash each, on the server's one sync thread), so users, rooms, cookies and
# the SECRET_KEY they are signed with are kept in $CACHE/<config>/ (outside the repo, with the
# SQLite file of the embedded configuration) and re-used while a cookie still opens its room.
#
# Env: PORT (8000), PG_URL (postgres://postgres@127.0.0.1:5432/chatbench), BENCH_REDIS_URL
#      (redis://127.0.0.1:6379/5), RAISED_BURST (1000), RAISED_REFILL (1000), ROUNDS (1),
#      WORK (scratch folder; default a new /tmp/socket-bench.XXXXXX), CACHE (/tmp/socket-bench-cache),
#      FRESH=1 (forget the cache and drop/re-create the PostgreSQL database first),
#      RUN_TIMEOUT (s per scenario, 240), LOW_RAMP_START (S3low's first step, 10 msg/s in),
#      PROD_WORKERS (2, prod2's daphne processes), PEERS (see above), PEER_PORT (8001),
#      PEER_PGDATABASE (chatbench_peers).
#      run.sh's own knobs pass through, e.g. EXTRA_ARGS="--settle 15" (loadgen flags), IDLE_CONNS.
# Output (in $WORK): report.md, raw.jsonl, server-*.log, access-*.log, load.txt (uptime/top before
# each scenario), problems.txt (tracebacks, 5xx, error frames, failed connections), peer-*.json
# (the peers' logs are in harness/results/).
# Two runs at once disturb each other beyond sharing the cores: with the same BENCH_REDIS_URL each
# start deletes the other's keys (its sockets then see "Redis lost its data" and get 4503), and
# with the same PG_URL they share users and so their posting budgets. Give a second run its own
# PG_URL, BENCH_REDIS_URL, CACHE and PORT.
set -euo pipefail

REPO="$(cd "$(dirname "$0")/.." && pwd)"
SHARED_DIR="$(dirname "$0")/../../shared/bench"
[[ -r $SHARED_DIR/run.sh ]] || { echo "harness not found at $SHARED_DIR" >&2; exit 2; }
SHARED_DIR="$(cd "$SHARED_DIR" && pwd)"

CONFIG=${1:-pg-redis}
shift || true
SCENARIOS=("$@")
[[ ${#SCENARIOS[@]} -gt 0 ]] || SCENARIOS=(S1 S3 S2 S4)
case $CONFIG in pg-redis|embedded|prod2) ;; *) echo "config must be pg-redis, embedded or prod2" >&2; exit 2 ;; esac
for s in "${SCENARIOS[@]}"; do
  case $s in S1|S2|S3|S3low|S4) ;; *) echo "unknown scenario $s (S1, S2, S3, S3low, S4)" >&2; exit 2 ;; esac
done

PORT=${PORT:-8000}
PG_URL=${PG_URL:-postgres://postgres@127.0.0.1:5432/chatbench}
BENCH_REDIS_URL=${BENCH_REDIS_URL:-redis://127.0.0.1:6379/5}
RAISED_BURST=${RAISED_BURST:-1000}
RAISED_REFILL=${RAISED_REFILL:-1000}
ROUNDS=${ROUNDS:-1}
RUN_TIMEOUT=${RUN_TIMEOUT:-240}
LOW_RAMP_START=${LOW_RAMP_START:-10}
PROD_WORKERS=${PROD_WORKERS:-2}
PEERS=${PEERS-daphne-redis-pg uvicorn-pubsub}
PEER_PORT=${PEER_PORT:-8001}
PEER_PGDATABASE=${PEER_PGDATABASE:-chatbench_peers}
PY="$REPO/.venv/bin/python"
DAPHNE="$REPO/.venv/bin/daphne"

WORK=${WORK:-$(mktemp -d /tmp/socket-bench.XXXXXX)}
CACHE=${CACHE:-/tmp/socket-bench-cache}
# prod2 serves pg-redis's database with pg-redis's SECRET_KEY: its users and cookies are the same.
CACHE_NAME=$CONFIG
[[ $CONFIG == prod2 ]] && CACHE_NAME=pg-redis
mkdir -p "$WORK" "$CACHE/$CACHE_NAME"
WORK="$(cd "$WORK" && pwd)"
CACHE_ROOT="$(cd "$CACHE" && pwd)"
CACHE="$CACHE_ROOT/$CACHE_NAME"
for d in "$WORK" "$CACHE"; do
  case "$d/" in "$REPO"/*) echo "WORK and CACHE must be outside the repo ($REPO)" >&2; exit 2 ;; esac
done
if [[ ${FRESH:-0} == 1 ]]; then rm -f "$CACHE"/cookies-*.txt "$CACHE"/secret_key "$CACHE"/embedded.sqlite3*; fi
H="$WORK/harness"
RAW="$WORK/raw.jsonl"
PROBLEMS="$WORK/problems.txt"
: > "$PROBLEMS"
log() { echo "[socket_bench $(date +%H:%M:%S)] $*" >&2; }

# --- the harness, copied outside the repo -------------------------------------------------------
log "harness: $SHARED_DIR -> $H"
mkdir -p "$H"
cp -r "$SHARED_DIR/." "$H/"
chmod -R u+w "$H"
rm -rf "$H/results"            # the anchors' raw files are not ours; run.sh recreates results/tmp
mkdir -p "$H/results"
(cd "$H" && timeout 300 npm install --no-audit --no-fund --loglevel=error >/dev/null)
# The harness's Python side (the peers' Django, daphne, uvicorn; prepare_chat.py's requests) gets
# the venv of its own requirements.txt, built once per version of that file and kept in
# $CACHE_ROOT. prepare_chat.py runs with it too, so that our venv needs only requirements.txt
# (a fresh clone after the README's setup) and no test dependency for `requests`.
HVENV="$CACHE_ROOT/harness-venv-$(sha256sum "$H/requirements.txt" | cut -c1-12)"
if [[ ! -f $HVENV/.complete ]]; then
  log "harness venv: $HVENV (once)"
  rm -rf "$HVENV"   # a venv cannot be moved (its scripts name their python), so it is built in place
  python3.11 -m venv "$HVENV"
  timeout 600 "$HVENV/bin/pip" install -q --disable-pip-version-check -r "$H/requirements.txt"
  touch "$HVENV/.complete"
fi

# --- the server's environment -----------------------------------------------------------------
if [[ ! -s $CACHE/secret_key ]]; then
  (umask 077 && echo "bench-secret-key-$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')" > "$CACHE/secret_key")
fi
if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
  echo "something already listens on 127.0.0.1:$PORT; stop it or set PORT" >&2; exit 2
fi
SERVER_ENV=(
  DEBUG=false
  SECRET_KEY="$(cat "$CACHE/secret_key")"
  SECURE_SSL_REDIRECT=false SESSION_COOKIE_SECURE=false CSRF_COOKIE_SECURE=false
  ALLOWED_HOSTS=127.0.0.1,localhost
  LOG_LEVEL=WARNING
  MEDIA_ROOT="$WORK/media"
)
REDIS_DB=""
if [[ $CONFIG == pg-redis || $CONFIG == prod2 ]]; then
  SERVER_ENV+=(DATABASE_URL="$PG_URL" REDIS_URL="$BENCH_REDIS_URL" CHAT_REDIS_KEY_PREFIX=bench: CHANNEL_PREFIX=benchasgi)
  REDIS_DB=${BENCH_REDIS_URL##*/}
  [[ $REDIS_DB =~ ^[0-9]+$ ]] || REDIS_DB=0
  PG_DB=${PG_URL##*/}
  PG_SERVER=${PG_URL%/*}
  if [[ ${FRESH:-0} == 1 ]]; then
    log "dropping database $PG_DB"
    timeout 60 psql "$PG_SERVER/postgres" -qc "DROP DATABASE IF EXISTS \"$PG_DB\" WITH (FORCE)"
  fi
  if ! timeout 30 psql "$PG_SERVER/postgres" -qtAc "SELECT 1 FROM pg_database WHERE datname='$PG_DB'" | grep -q 1; then
    log "creating database $PG_DB"
    timeout 60 psql "$PG_SERVER/postgres" -qc "CREATE DATABASE \"$PG_DB\""
  fi
else
  SERVER_ENV+=(DATABASE_URL="sqlite:///$CACHE/embedded.sqlite3")
fi
run_env() { env -u DATABASE_URL -u REDIS_URL "${SERVER_ENV[@]}" "$@"; }

log "migrate + collectstatic ($CONFIG)"
(cd "$REPO" && run_env timeout 300 "$PY" manage.py migrate --noinput -v 0)
(cd "$REPO" && run_env timeout 300 "$PY" manage.py collectstatic --noinput -v 0)

clean_redis() {
  [[ -n $REDIS_DB ]] || return 0
  local pattern
  for pattern in 'bench:*' 'benchasgi*'; do
    redis-cli -h 127.0.0.1 -p 6379 -n "$REDIS_DB" --scan --pattern "$pattern" \
      | xargs -r -n 500 redis-cli -h 127.0.0.1 -p 6379 -n "$REDIS_DB" del >/dev/null
  done
}

# --- server start/stop --------------------------------------------------------------------------
SERVER_PID=""
SERVER_LOG=""
stop_server() {
  [[ -n $SERVER_PID ]] || return 0
  # serve-prod's children run in sessions of their own (so that they stop in its order): the
  # group gets only serve-prod, which stops them within the shutdown grace (10 s) + 5 s.
  local children
  children=$(pgrep -P "$SERVER_PID" || true)
  kill -TERM -- "-$SERVER_PID" 2>/dev/null || kill -TERM "$SERVER_PID" 2>/dev/null || true
  for _ in $(seq 250); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
  kill -KILL -- "-$SERVER_PID" 2>/dev/null || true
  # shellcheck disable=SC2086  # one PID per word
  [[ -z $children ]] || kill -KILL $children 2>/dev/null || true
  wait "$SERVER_PID" 2>/dev/null || true
  SERVER_PID=""
}
trap stop_server EXIT
trap 'exit 130' INT TERM

start_server() { # $1 = default | raised | prepare, $2 = name of this run (log file names)
  local mode=$1 name=$2 limits=()
  stop_server
  clean_redis
  [[ $mode == raised ]] && limits=(CHAT_POST_BURST="$RAISED_BURST" CHAT_POST_REFILL_PER_SECOND="$RAISED_REFILL")
  # Signing up is plain HTTP. Under ASGI every request runs in a thread of its own; without the
  # PostgreSQL pool (DATABASE_POOL=false) persistent connections (CONN_MAX_AGE=60) then pile up,
  # 50+ during prepare_chat. The users' server closes them; measured servers keep the settings.
  [[ $mode == prepare ]] && limits=(CONN_MAX_AGE=0)
  SERVER_LOG="$WORK/server-$name.log"
  if [[ $CONFIG == prod2 && $mode != prepare ]]; then
    # The recipe as documented, with the bench's logs: migrate/collectstatic were done above.
    log "starting scripts/serve-prod: nginx on 127.0.0.1:$PORT, $PROD_WORKERS daphne from 127.0.0.1:$((PORT + 1)) ($mode${limits[*]:+: ${limits[*]}}), log $SERVER_LOG"
    (cd "$REPO" && exec setsid env -u DATABASE_URL -u REDIS_URL "${SERVER_ENV[@]}" ${limits[@]+"${limits[@]}"} \
       PORT="$PORT" BIND=127.0.0.1 UPSTREAM_PORT=$((PORT + 1)) WORKERS="$PROD_WORKERS" PREPARE=0 \
       RUN_DIR="$WORK/serve-prod-$name" DAPHNE_ARGS="-v 0" ACCESS_LOG_PREFIX="$WORK/access-$name-" \
       scripts/serve-prod) >>"$SERVER_LOG" 2>&1 &
  else
    # prod2's users are signed up on one plain daphne too: it is HTTP only, and cheaper to start.
    log "starting daphne on 127.0.0.1:$PORT ($CONFIG, $mode${limits[*]:+: ${limits[*]}}), log $SERVER_LOG"
    (cd "$REPO" && exec setsid env -u DATABASE_URL -u REDIS_URL "${SERVER_ENV[@]}" ${limits[@]+"${limits[@]}"} \
       "$DAPHNE" -v 0 --access-log "$WORK/access-$name.log" \
       -e "tcp:port=$PORT:interface=127.0.0.1:backlog=1024" chatsite.asgi:application) >>"$SERVER_LOG" 2>&1 &
  fi
  SERVER_PID=$!
  local code=""
  for _ in $(seq 120); do
    code=$(curl -s -o /dev/null -m 2 -w '%{http_code}' "http://127.0.0.1:$PORT/accounts/login/" || true)
    [[ $code == 200 ]] && return 0
    kill -0 "$SERVER_PID" 2>/dev/null || break
    sleep 0.5
  done
  echo "server did not answer /accounts/login/ with 200 within 60 s (last: ${code:-none}); log:" >&2
  tail -30 "$SERVER_LOG" >&2
  exit 1
}

# --- users, cookies and rooms -------------------------------------------------------------------
declare -A PREPARED=()
prepare() { # $1 = family: main | s2 | s4
  local fam=$1 users rooms prefix
  [[ -n ${PREPARED[$fam]:-} ]] && return 0
  case $fam in
    main) users=bench; rooms=10; prefix=bk ;;
    s2) users=benchs2-; rooms=1; prefix=bk2 ;;
    s4) users=benchs4-; rooms=100; prefix=bk4 ;;
  esac
  local cookies="$CACHE/cookies-$fam.txt" first code
  if [[ -s $cookies && $(wc -l < "$cookies") -eq 200 ]]; then
    first=$(head -1 "$cookies")
    code=$(curl -s -o /dev/null -m 10 -w '%{http_code}' -H "Cookie: $first" \
      "http://127.0.0.1:$PORT/api/rooms/${prefix}r$((rooms - 1))/" || true)
    if [[ $code == 200 ]]; then
      log "re-using $cookies (users ${users}0..199, rooms ${prefix}r0..r$((rooms - 1)))"
      PREPARED[$fam]=1
      return 0
    fi
  fi
  local try
  for try in 1 2; do
    log "prepare_chat: users ${users}0..199, rooms ${prefix}r0..r$((rooms - 1)) (try $try)"
    if timeout 1800 "$HVENV/bin/python" "$H/prepare_chat.py" --base "http://127.0.0.1:$PORT" --users 200 --rooms "$rooms" \
         --prefix "$prefix" --user-prefix "$users" --out "$cookies" >&2; then
      break
    fi
  done
  if [[ ! -s $cookies || $(wc -l < "$cookies") -ne 200 ]]; then
    echo "prepare_chat did not get 200 users for $fam; see $SERVER_LOG" >&2
    exit 1
  fi
  PREPARED[$fam]=1
}

# --- scenarios ----------------------------------------------------------------------------------
REDIS_PID=""
[[ $CONFIG == pg-redis || $CONFIG == prod2 ]] && REDIS_PID=$(redis-cli -h 127.0.0.1 -p 6379 info server | tr -d '\r' | awk -F: '/^process_id/{print $2}')
scenario_params() { # sets mode, fam, prefix, run (run.sh's scenario), ramp for scenario $1
  run=$1; ramp=""
  case $1 in
    S1) mode=default; fam=main; prefix=bk ;;
    S3) mode=raised; fam=main; prefix=bk ;;
    S3low) mode=raised; fam=main; prefix=bk; run=S3; ramp=$LOW_RAMP_START ;;
    S2) mode=raised; fam=s2; prefix=bk2 ;;
    S4) mode=raised; fam=s4; prefix=bk4 ;;
  esac
}
# --- the peers' PostgreSQL ----------------------------------------------------------------------
setup_peer_pg() {
  local admin="${PG_URL%/*}/postgres"
  if ! timeout 30 psql "$admin" -qtAc "SELECT 1 FROM pg_roles WHERE rolname='bench'" | grep -q 1; then
    log "creating the PostgreSQL role bench (the harness's peers log in as bench/bench)"
    timeout 30 psql "$admin" -qc "CREATE ROLE bench LOGIN PASSWORD 'bench'"
  fi
  if ! timeout 30 psql "$admin" -qtAc "SELECT 1 FROM pg_database WHERE datname='$PEER_PGDATABASE'" | grep -q 1; then
    log "creating database $PEER_PGDATABASE (owner bench) for daphne-redis-pg"
    timeout 60 psql "$admin" -qc "CREATE DATABASE \"$PEER_PGDATABASE\" OWNER bench"
  fi
}
[[ " $PEERS " == *" daphne-redis-pg "* ]] && setup_peer_pg

run_peer() { # $1 = peer, $2 = our scenario name, $3 = round
  local peer=$1 scen=$2 round=$3 tag="" out
  scenario_params "$scen"
  [[ -n $ramp ]] && tag="[ramp from $ramp/s]"
  out="$WORK/peer-$peer-$scen-r$round.json"
  log "peer $peer $scen round $round: $(uptime | sed 's/.*load average/load average/')"
  # Our run's variables must not reach run.sh: without them it starts and samples its own peer
  # (EXTRA_ARGS and IDLE_CONNS do: the peers run the same scenarios as ours).
  if ! (cd "$H" && env -u URL -u ORIGIN -u PROTO -u COOKIE -u COOKIES_FILE -u ROOM_PREFIX -u SERVER_PID \
          -u AUX_PID PORT="$PEER_PORT" VENV="$HVENV" PGDATABASE="$PEER_PGDATABASE" \
          RAW="$RAW" ROUND="$round" PEER_TAG="$tag" ${ramp:+RAMP_START=$ramp} \
          timeout "$RUN_TIMEOUT" ./run.sh "$peer" "$run" > "$out"); then
    echo "FAILED: peer $peer $scen round $round (see $out, $H/results/$peer-$run.server.log)" | tee -a "$PROBLEMS" >&2
  fi
}

# Users first, on a server of their own; then one fresh server per scenario.
start_server prepare "$CONFIG-prepare"
for scen in "${SCENARIOS[@]}"; do scenario_params "$scen"; prepare "$fam"; done
for round in $(seq "$ROUNDS"); do
  for scen in "${SCENARIOS[@]}"; do
    scenario_params "$scen"
    start_server "$mode" "$CONFIG-$scen-r$round"
    {
      echo "== $(date -Is) round $round $CONFIG $scen (rate limits $mode)"
      echo "code: $(git -C "$REPO" rev-parse --short HEAD), $(git -C "$REPO" status --porcelain | wc -l) changed/untracked files in the tree"
      uptime
      top -bn1 -w 120 | sed -n '7,14p'
    } >> "$WORK/load.txt"
    log "$scen round $round: $(uptime | sed 's/.*load average/load average/')"
    tag="[ours $CONFIG]"
    [[ $mode == raised ]] && tag="[ours $CONFIG, limits raised]"
    [[ -n $ramp ]] && tag="[ours $CONFIG, limits raised, ramp from $ramp/s]"
    if ! (cd "$H" && env URL="ws://127.0.0.1:$PORT/ws/chat/" ORIGIN="http://127.0.0.1:$PORT" PROTO=chat \
          COOKIES_FILE="$CACHE/cookies-$fam.txt" ROOM_PREFIX="$prefix" SERVER_PID="$SERVER_PID" \
          AUX_PID="$REDIS_PID" RAW="$RAW" ROUND="$round" PEER_TAG="$tag" ${ramp:+RAMP_START=$ramp} \
          timeout "$RUN_TIMEOUT" ./run.sh external "$run" > "$WORK/$CONFIG-$scen-r$round.json"); then
      echo "FAILED: $CONFIG $scen round $round (see $WORK/$CONFIG-$scen-r$round.json, $SERVER_LOG)" | tee -a "$PROBLEMS" >&2
    fi
  done
  # Then the peers, with ours stopped (2 cores: nothing else of the bench runs meanwhile).
  stop_server
  for peer in $PEERS; do
    for scen in "${SCENARIOS[@]}"; do run_peer "$peer" "$scen" "$round"; done
  done
done
stop_server

# --- problems seen ------------------------------------------------------------------------------
for f in "$WORK"/server-"$CONFIG"-S*.log; do
  [[ -f $f ]] || continue
  n=$(grep -c 'Traceback' "$f" || true)
  if [[ $n -gt 0 ]]; then
    echo "$(basename "$f"): $n traceback(s); last lines of each:" >> "$PROBLEMS"
    grep -B2 -A0 -E '^[A-Za-z_.]+(Error|Exception)\b|^[a-z_.]+\.[A-Za-z]+(Error|Exception)\b' "$f" | tail -40 >> "$PROBLEMS"
  fi
done
for f in "$WORK"/access-"$CONFIG"-S*.log; do
  [[ -f $f ]] || continue
  n=$(grep -cE '" 5[0-9][0-9] |"WSREJECT ' "$f" || true)
  [[ $n -eq 0 ]] || { echo "$(basename "$f"): $n HTTP 5xx / WSREJECT lines:" >> "$PROBLEMS"; grep -E '" 5[0-9][0-9] |"WSREJECT ' "$f" | head -10 >> "$PROBLEMS"; }
done
if [[ -s $RAW ]]; then
  node -e '
const lines = require("fs").readFileSync(process.argv[1], "utf8").split("\n").filter(Boolean);
for (const l of lines) {
  const r = JSON.parse(l);
  const errs = Object.entries(r.protocol_frames || {}).filter(([k]) => k.startsWith("error:"));
  const cerr = (r.connections && r.connections.errors) || {};
  const bad = [];
  if (errs.length) bad.push("error frames " + errs.map(([k, n]) => `${k}=${n}`).join(" "));
  if (Object.keys(cerr).length) bad.push("connection errors " + JSON.stringify(cerr));
  if (r.closed_during_run) bad.push(`closed_during_run=${r.closed_during_run}`);
  if (bad.length) console.log(`${r.peer} ${r.scenario} round ${r.round}: ${bad.join("; ")}`);
}' "$RAW" >> "$PROBLEMS"
  title="Our server ($CONFIG)${PEERS:+ and the peers $PEERS} under the shared load harness $(date +%Y-%m-%d)"
  (cd "$H" && node report.mjs "$RAW" "$title") > "$WORK/report.md"
  cat "$WORK/report.md"
fi
echo
if [[ -s $PROBLEMS ]]; then echo "== problems seen:"; cat "$PROBLEMS"; else echo "== no problems seen (no traceback, no 5xx, no error frame)"; fi
echo "== output: $WORK (report.md, raw.jsonl, server/access logs, load.txt, problems.txt)"
