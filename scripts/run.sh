#!/usr/bin/env bash
# run.sh sets this machine up and runs Mamori's main job: the server on the
# embedded store and an agent on this same host enrolled to it. It prints how
# to reach the server with the CLI, and stops both cleanly on Ctrl-C/SIGTERM.
#
# Usage: sudo bash scripts/run.sh
# Env:   MAMORI_HOME (default /var/lib/mamori)  MAMORI_LISTEN (default 127.0.0.1:8443)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH=/usr/local/go/bin:$PATH

home=${MAMORI_HOME:-/var/lib/mamori}
listen=${MAMORI_LISTEN:-127.0.0.1:8443}
install -d -m 700 "$home" "$home/server" "$home/agent"

echo "building…"
make -s build
mamori=$PWD/bin/mamori
agent=$PWD/bin/mamori-agent

"$mamori" server --data "$home/server" --listen "$listen" >>"$home/server.log" 2>&1 &
server_pid=$!
agent_pid=
stop() {
	trap - INT TERM
	echo; echo "stopping…"
	[[ -n $agent_pid ]] && kill -TERM "$agent_pid" 2>/dev/null && wait "$agent_pid" 2>/dev/null || true
	kill -TERM "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null || true
	echo "stopped; data kept in $home"
	exit 0
}
trap stop INT TERM

for _ in $(seq 1 100); do
	[[ -s $home/server/server.json ]] && "$mamori" hosts --data "$home/server" >/dev/null 2>&1 && break
	kill -0 "$server_pid" 2>/dev/null || { echo "server failed to start:"; tail -20 "$home/server.log"; exit 1; }
	sleep 0.1
done

if [[ ! -s $home/agent/identity.json ]]; then
	token=$("$mamori" token create --data "$home/server" --ttl 10m --note "local agent (run.sh)")
	"$agent" --server "$(sed -n 's/.*"url": *"\([^"]*\)".*/\1/p' "$home/server/server.json")" \
		--enroll-token "$token" --data "$home/agent" >>"$home/agent.log" 2>&1 &
else
	"$agent" --data "$home/agent" >>"$home/agent.log" 2>&1 &
fi
agent_pid=$!
sleep 2
kill -0 "$agent_pid" 2>/dev/null || { echo "agent failed to start:"; tail -20 "$home/agent.log"; stop; }
url=$(sed -n 's/.*"url": *"\([^"]*\)".*/\1/p' "$home/server/server.json")

cat <<MSG

Mamori is running.
  server   $url   (REST API; OpenAPI document at $url/api/v1/openapi.json)
           admin credential: $home/server/admin.token   CA: $home/server/ca.crt
  console  the web console arrives with the console issue; until then use the CLI or the API
  agent    data in $home/agent, logs in $home/agent.log

Try (in another shell):
  $mamori hosts  --data $home/server
  $mamori events --data $home/server --since 5m --type process_exec --where 'process.name=curl'
  $mamori tree   --data $home/server ENTITY_ID
  $agent status --data $home/agent
  curl --cacert $home/server/ca.crt -H "Authorization: Bearer \$(cat $home/server/admin.token)" $url/api/v1/hosts

Logs: $home/server.log $home/agent.log.  Ctrl-C stops both.
MSG
wait "$server_pid"
