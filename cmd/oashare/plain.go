//go:build oashare_plain

package main

// plainNodes marks a build for measuring what membership costs, made only
// by make bench (go build -tags oashare_plain): its nodes have no key and
// no network, sign no record and speak plain TCP to any node of the same
// --network name, as every node did before members only. It is the same
// code otherwise, so the bench's "plain" column against "oashare" is the
// price of keys, signed records, TLS and sealed records on the testbed. It
// protects nothing: never run it on a real LAN.
const plainNodes = true
