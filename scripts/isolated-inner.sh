#!/usr/bin/env bash
# PID 1 of the namespace made by scripts/isolated.sh: sets up the interfaces, runs the command,
# and passes its exit status out. (Kept as bash with traps: PID 1 ignores unhandled signals.)
set -euo pipefail
ip link set lo up
# dummy is the natural device; kernels without the dummy driver have ifb, which behaves the same
# here (no peer, carrier up, not loopback). A veth pair with both ends inside is the last resort.
if ip link add "$PARLEY_MEDIA_IFACE" type dummy 2>/dev/null; then :
elif ip link add "$PARLEY_MEDIA_IFACE" type ifb 2>/dev/null; then :
else
  ip link add "$PARLEY_MEDIA_IFACE" type veth peer name "${PARLEY_MEDIA_IFACE}p"
  ip link set "${PARLEY_MEDIA_IFACE}p" up
fi
ip link set "$PARLEY_MEDIA_IFACE" addrgenmode none
sysctl -qw "net.ipv6.conf.$PARLEY_MEDIA_IFACE.disable_ipv6=1"
ip addr add "$PARLEY_MEDIA_ADDR/32" dev "$PARLEY_MEDIA_IFACE"
ip link set "$PARLEY_MEDIA_IFACE" up
child=""
trap '[ -n "$child" ] && kill -TERM "$child" 2>/dev/null' TERM INT
"$@" &
child=$!
set +e
wait "$child"; status=$?
# A trapped signal interrupts wait: wait again for the real exit status.
while kill -0 "$child" 2>/dev/null; do wait "$child"; status=$?; done
exit "$status"
