//go:build !oashare_plain

package main

// plainNodes is false in every build but the bench's (see plain.go):
// nodes are members of one network.
const plainNodes = false
