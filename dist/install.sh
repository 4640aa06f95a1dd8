#!/bin/sh
# Installs hyprbox-agent: the binary, its configuration (/etc/hyprbox/agent.env, mode 0600: it holds
# the node token) and the systemd unit, then enables and (re)starts the service.
#
#   sh install.sh --server https://hyprbox.example.com --token hbnt_… [--node-id web-1]
#                 [--binary PATH] [--prefix /usr/local] [--destdir DIR]
#
# The token may also come from the HYPRBOX_TOKEN environment variable, which keeps it out of the
# process list and shell history. With --destdir (packaging, tests) files are only staged there and
# systemctl is not run. A plain http:// server other than this machine is refused (the agent runs
# what the server sends as root) unless HYPRBOX_ALLOW_INSECURE_HTTP=true is in the environment.
set -eu

PREFIX=/usr/local
DESTDIR=
BINARY=
SERVER=
TOKEN=${HYPRBOX_TOKEN:-}
NODE_ID=
ALLOW_INSECURE=${HYPRBOX_ALLOW_INSECURE_HTTP:-false}

usage() {
    sed -n '2,12s/^# \{0,1\}//p' "$0"
}

die() {
    echo "install.sh: $*" >&2
    exit 2
}

# Options take their value as the next argument or after '='.
while [ $# -gt 0 ]; do
    opt=$1
    case $opt in
        --*=*) value=${opt#*=}; opt=${opt%%=*}; shift ;;
        -h|--help) usage; exit 0 ;;
        --*)
            [ $# -ge 2 ] || die "$opt needs a value"
            value=$2; shift 2 ;;
        *) die "unexpected argument: $opt (see --help)" ;;
    esac
    case $opt in
        --server) SERVER=$value ;;
        --token) TOKEN=$value ;;
        --node-id) NODE_ID=$value ;;
        --binary) BINARY=$value ;;
        --prefix) PREFIX=$value ;;
        --destdir) DESTDIR=$value ;;
        *) die "unknown option: $opt (see --help)" ;;
    esac
done

[ -n "$SERVER" ] || die "--server URL is required"
[ -n "$TOKEN" ] || die "--token TOKEN (or HYPRBOX_TOKEN in the environment) is required"

# Values are written unquoted to an EnvironmentFile: allow only characters that need no quoting.
case $SERVER in
    http://*|https://*) ;;
    *) die "--server must start with http:// or https://" ;;
esac
case $SERVER in
    *[!A-Za-z0-9._~:/?#@!\$\&\'\(\)*+,\;=%\[\]-]*) die "--server contains characters not allowed in a URL" ;;
esac
case $ALLOW_INSECURE in
    true|1|yes|on) ALLOW_INSECURE=true ;;
    false|0|no|off|'') ALLOW_INSECURE=false ;;
    *) die "HYPRBOX_ALLOW_INSECURE_HTTP must be true or false" ;;
esac
# The host of an http:// URL: after any user@, before the port or path.
case $SERVER in
    http://*)
        host=${SERVER#http://}
        host=${host%%/*}
        host=${host%%\?*}
        host=${host%%#*}
        host=${host##*@}
        case $host in
            \[*) host=${host#\[}; host=${host%%]*} ;;
            *) host=${host%%:*} ;;
        esac
        loopback=false
        case $host in
            localhost|LOCALHOST|::1) loopback=true ;;
            127.*.*.*) case $host in *[!0-9.]*) ;; *) loopback=true ;; esac ;;
        esac
        case $loopback in
            true) ;;
            *)
                if [ "$ALLOW_INSECURE" != true ]; then
                    die "--server $SERVER is plain http:// to another machine: the node token would travel in clear and anyone on the path could send scripts the agent runs as root. Use https://, or set HYPRBOX_ALLOW_INSECURE_HTTP=true to accept the risk"
                fi
                echo "install.sh: WARNING: plain http:// to $host allowed by HYPRBOX_ALLOW_INSECURE_HTTP=true; the node token travels in clear" >&2
                ;;
        esac
        ;;
esac
case $TOKEN in
    *[!A-Za-z0-9._-]*) die "--token contains unexpected characters" ;;
esac
if [ -n "$NODE_ID" ]; then
    case $NODE_ID in
        *[!A-Za-z0-9._-]*) die "--node-id may only contain letters, digits, '.', '_' and '-'" ;;
    esac
fi

here=$(cd "$(dirname "$0")" && pwd)
if [ -z "$BINARY" ]; then
    for candidate in "$here/hyprbox-agent" "$here/../target/release/hyprbox-agent"; do
        if [ -x "$candidate" ]; then
            BINARY=$candidate
            break
        fi
    done
fi
if [ -z "$BINARY" ] || [ ! -f "$BINARY" ]; then
    die "no hyprbox-agent binary found: pass --binary PATH"
fi
[ -f "$here/hyprbox-agent.service" ] || die "hyprbox-agent.service not found next to install.sh"

bindir="$DESTDIR$PREFIX/bin"
confdir="$DESTDIR/etc/hyprbox"
unitdir="$DESTDIR/etc/systemd/system"

install -d -m 0755 "$bindir" "$unitdir"
install -d -m 0755 "$confdir"
# Copy then rename: replacing a running binary in place would fail ("text file busy").
install -m 0755 "$BINARY" "$bindir/.hyprbox-agent.new"
mv -f "$bindir/.hyprbox-agent.new" "$bindir/hyprbox-agent"

# The token is a credential: the file is created 0600 (umask) before anything is written to it.
envfile="$confdir/agent.env"
(
    umask 077
    tmp="$confdir/.agent.env.new"
    {
        echo "# hyprbox-agent configuration, written by install.sh. Mode 0600: it holds the node token."
        echo "HYPRBOX_SERVER=$SERVER"
        echo "HYPRBOX_TOKEN=$TOKEN"
        if [ -n "$NODE_ID" ]; then
            echo "HYPRBOX_NODE_ID=$NODE_ID"
        fi
        if [ "$ALLOW_INSECURE" = true ]; then
            echo "HYPRBOX_ALLOW_INSECURE_HTTP=true"
        fi
    } >"$tmp"
    chmod 0600 "$tmp"
    mv -f "$tmp" "$envfile"
)

# The unit names /usr/local/bin; follow --prefix.
sed "s|^ExecStart=/usr/local/bin/hyprbox-agent|ExecStart=$PREFIX/bin/hyprbox-agent|" \
    "$here/hyprbox-agent.service" >"$unitdir/hyprbox-agent.service"
chmod 0644 "$unitdir/hyprbox-agent.service"

echo "installed $bindir/hyprbox-agent, $envfile (0600) and $unitdir/hyprbox-agent.service"

if [ -z "$DESTDIR" ] && command -v systemctl >/dev/null 2>&1; then
    systemctl daemon-reload
    systemctl enable hyprbox-agent
    # restart, not start: on an upgrade the old binary is still running. Jobs survive the
    # restart (KillMode=process) and are resumed.
    systemctl restart hyprbox-agent
    echo "hyprbox-agent is enabled and running: journalctl -u hyprbox-agent -f"
else
    echo "systemctl not run (DESTDIR set or no systemd): enable the service yourself"
fi
