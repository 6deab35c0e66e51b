# The NoCloud seed subset the hvops Linux test guest understands (busybox awk).
# Run as: awk -f nocloud.awk -v kind=meta|user|network FILE
# Prints one record per line, fields separated by single spaces:
#   meta:    "instance-id X", "local-hostname H"
#   user:    "hostname H", "fqdn F", "key KEYLINE" (top-level
#            ssh_authorized_keys and users[].ssh_authorized_keys, block lists)
#   network: "eth ID MAC MATCHNAME SETNAME" ("-" for none), then per address
#            "addr ID A/P", "gw ID VIA" (gateway4, or a route to default or
#            0.0.0.0/0), "route ID TO VIA"
# Comments (" #..." and whole-line), quotes around scalars and CRs are dropped.

function unquote(s) {
    sub(/^[ \t]+/, "", s); sub(/[ \t]+$/, "", s)
    if (s ~ /^".*"$/ || s ~ /^'.*'$/) s = substr(s, 2, length(s) - 2)
    return s
}
function indent_of(s) { match(s, /^ */); return RLENGTH }
function value_of(s) { sub(/^[^:]*:/, "", s); return unquote(s) }
function flush_eth() {
    if (eth_id == "") return
    print "eth", eth_id, (eth_mac == "" ? "-" : tolower(eth_mac)), (eth_name == "" ? "-" : eth_name), (eth_set == "" ? "-" : eth_set)
    for (i = 1; i <= naddr; i++) print "addr", eth_id, addrs[i]
    if (eth_gw != "") print "gw", eth_id, eth_gw
    for (i = 1; i <= nroute; i++) print "route", eth_id, routes[i]
    eth_id = ""; eth_mac = ""; eth_name = ""; eth_set = ""; eth_gw = ""; naddr = 0; nroute = 0
}
function flush_route() {
    if (route_via == "") { route_to = ""; return }
    if (route_to == "default" || route_to == "0.0.0.0/0") eth_gw = route_via
    else if (route_to != "") routes[++nroute] = route_to " " route_via
    route_to = ""; route_via = ""
}
function add_addresses(list,    n, parts, j) {
    gsub(/\[/, "", list); gsub(/\]/, "", list)
    n = split(list, parts, ",")
    for (j = 1; j <= n; j++) if (unquote(parts[j]) != "") addrs[++naddr] = unquote(parts[j])
}

BEGIN { keys_at = -1; section = ""; eth_at = -1; id_at = -1; list = "" }
{ sub(/\r$/, "") }
kind == "user" && NR == 1 && $0 !~ /^#cloud-config/ { exit }
/^[ \t]*#/ || /^[ \t]*$/ { next }
{ sub(/[ \t]+#.*$/, ""); ind = indent_of($0); line = substr($0, ind + 1) }

kind == "meta" && ind == 0 && line ~ /^(instance-id|local-hostname):/ {
    split(line, kv, ":"); print kv[1], value_of(line); next
}

kind == "user" {
    if (keys_at >= 0) {
        if (line ~ /^- / && ind >= keys_at) { k = substr(line, 3); print "key", unquote(k); next }
        keys_at = -1
    }
    if (ind == 0) section = line
    if (ind == 0 && line ~ /^(hostname|fqdn):/) { split(line, kv, ":"); print kv[1], value_of(line); next }
    if (line ~ /^(- )?ssh_authorized_keys:[ \t]*$/ && (ind == 0 || section ~ /^users:/)) {
        keys_at = ind + (line ~ /^- / ? 2 : 0)
    }
    next
}

kind == "network" {
    if (eth_at >= 0 && ind <= eth_at) { flush_route(); flush_eth(); eth_at = -1 }
    if (eth_at < 0) {
        if (line ~ /^ethernets:[ \t]*$/) { eth_at = ind; id_at = -1 }
        next
    }
    if (id_at < 0) id_at = ind
    if (ind == id_at) { flush_route(); flush_eth(); eth_id = line; sub(/:.*$/, "", eth_id); list = ""; next }
    if (list == "addresses" && line ~ /^- /) { add_addresses(substr(line, 3)); next }
    if (list == "routes" && line ~ /^- /) { flush_route(); line = substr(line, 3) }
    if (list == "routes" && line ~ /^to:/) { route_to = value_of(line); next }
    if (list == "routes" && line ~ /^via:/) { route_via = value_of(line); next }
    flush_route(); list = ""
    if (line ~ /^macaddress:/) eth_mac = value_of(line)
    else if (line ~ /^name:/) eth_name = value_of(line)
    else if (line ~ /^set-name:/) eth_set = value_of(line)
    else if (line ~ /^gateway4:/) eth_gw = value_of(line)
    else if (line ~ /^addresses:[ \t]*\[/) { sub(/^addresses:/, "", line); add_addresses(line) }
    else if (line ~ /^addresses:[ \t]*$/) list = "addresses"
    else if (line ~ /^routes:[ \t]*$/) list = "routes"
    next
}
END { if (kind == "network") { flush_route(); flush_eth() } }
