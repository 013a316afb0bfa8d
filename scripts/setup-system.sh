#!/usr/bin/env bash
# Install the Debian packages Portunus and its benchmark harness need.
# Idempotent: packages already installed are left alone, and apt-get runs only
# when something is missing. Daemons shipped by these packages are not started
# (the harness starts its own instances on loopback, by PID).
set -euo pipefail

PACKAGES=(
    iperf3 libiperf0          # traffic generator (CLI and the library the PyPI wrapper loads)
    wrk                       # HTTP load generator (the `http` experiment kind; nginx serves the files)
    iptables nftables         # kernel baselines
    iproute2 procps           # ip netns / veth / tc; ps
    haproxy nginx libnginx-mod-stream socat rinetd openssh-server openssh-client  # comparable forwarders
    gcc libc6-dev make        # builds the C splice reference forwarder
    python3-venv
    chromium chromium-driver  # headless browser + WebDriver for the web UI's browser tests (tests/webui)
)

missing=()
for p in "${PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$p")
    fi
done

if [ ${#missing[@]} -eq 0 ]; then
    echo "setup-system: all Debian packages present"
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
        echo "setup-system: missing packages (${missing[*]}) and not root; run as root or install sudo" >&2
        exit 1
    fi
fi
echo "setup-system: installing ${missing[*]}"
# The iperf3 package asks whether to start a system daemon; answer no.
echo "iperf3 iperf3/start_daemon boolean false" | $SUDO debconf-set-selections 2>/dev/null || true
# policy-rc.d 101 keeps the packages' own daemons (haproxy, nginx, rinetd, sshd) from starting.
restore_policy=""
if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
    $SUDO chmod +x /usr/sbin/policy-rc.d
    restore_policy=1
fi
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
if [ -n "$restore_policy" ]; then $SUDO rm -f /usr/sbin/policy-rc.d; fi
