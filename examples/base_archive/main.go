// Command app prints the name of the base image it runs on, read from /etc/os-release.
package main

import (
	"bufio"
	"fmt"
	"os"
	"strings"
)

func main() {
	f, err := os.Open("/etc/os-release")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	defer f.Close()
	scanner := bufio.NewScanner(f)
	for scanner.Scan() {
		if line := scanner.Text(); strings.HasPrefix(line, "PRETTY_NAME=") {
			name := strings.TrimPrefix(line, "PRETTY_NAME=")
			fmt.Printf("running on %s as uid %d\n", strings.Trim(name, `"`), os.Getuid())
			return
		}
	}
	fmt.Fprintln(os.Stderr, "no PRETTY_NAME in /etc/os-release")
	os.Exit(1)
}
