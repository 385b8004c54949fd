#!/bin/sh
# Refuse to start the Compose stack without its secrets (used by `make up`).
# Usage: deploy/check-env.sh [deploy/.env]
env_file="${1:-deploy/.env}"
required="API_JWT_SECRET APP_SECRET DB_PASSWORD REDIS_PASSWORD"

if [ ! -f "$env_file" ]; then
    echo "make up: $env_file does not exist." >&2
    echo "  cp deploy/.env.example $env_file, then set $required" >&2
    echo "  (e.g. openssl rand -base64 48 for each)." >&2
    exit 1
fi

missing=""
for name in $required; do
    # The last assignment wins, as in docker compose; quotes are stripped.
    value=$(sed -n "s/^[[:space:]]*$name[[:space:]]*=[[:space:]]*//p" "$env_file" | tail -n 1 \
        | sed -e 's/[[:space:]]*$//' -e "s/^['\"]//" -e "s/['\"]\$//")
    case "$value" in
        ""|change-me|changeme|CHANGE-ME) missing="$missing $name" ;;
    esac
done

if [ -n "$missing" ]; then
    echo "make up: $env_file must set a real value for:$missing" >&2
    echo "  (generate each with: openssl rand -base64 48; see deploy/.env.example)" >&2
    exit 1
fi
