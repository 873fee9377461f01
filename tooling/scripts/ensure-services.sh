#!/usr/bin/env bash
# Usage: ensure-services.sh [redis] [rabbitmq] [nats]
# Checks that each named server answers on loopback and starts it (Debian packages, no Docker) if not.
# It never reconfigures or restarts a server that is already up.
set -uo pipefail

up() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_port() { for _ in $(seq 1 120); do up "$1" && return 0; sleep 0.5; done; return 1; }
install_pkg() {
  command -v "$1" >/dev/null 2>&1 && return 0
  [ -n "${APT_UPDATED:-}" ] || { apt-get update -qq >/dev/null 2>&1; APT_UPDATED=1; }
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null 2>&1
}

for service in "$@"; do
  case "$service" in
    redis)
      up 6379 && { echo "redis: up"; continue; }
      install_pkg redis-server redis-server
      mkdir -p /var/lib/redis /var/log/redis
      redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
        --dir /var/lib/redis --logfile /var/log/redis/ci.log
      wait_port 6379 && echo "redis: started" || { echo "redis: failed to start"; exit 1; } ;;
    rabbitmq)
      up 5672 && { echo "rabbitmq: up"; continue; }
      install_pkg rabbitmq-server rabbitmq-server
      rabbitmq-server -detached
      wait_port 5672 && echo "rabbitmq: started" || { echo "rabbitmq: failed to start"; exit 1; } ;;
    nats)
      up 4222 && { echo "nats: up"; continue; }
      install_pkg nats-server nats-server
      mkdir -p /var/lib/nats-server
      start-stop-daemon --start --oknodo --background --exec /usr/sbin/nats-server -- \
        -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server -l /var/log/nats-server.log
      wait_port 4222 && echo "nats: started" || { echo "nats: failed to start"; exit 1; } ;;
    *) echo "unknown service: $service"; exit 1 ;;
  esac
done
[ "$#" -gt 0 ] || echo "no servers needed"
exit 0
