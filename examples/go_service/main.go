// Command service is a small HTTP service that answers with the greeting in its config file.
package main

import (
	"flag"
	"fmt"
	"log"
	"net/http"
	"os"
	"strings"
)

func main() {
	listen := flag.String("listen", ":8080", "address to listen on")
	check := flag.Bool("check", false, "print the service's settings and exit")
	flag.Parse()
	greeting, err := os.ReadFile("/etc/service/greeting")
	if err != nil {
		log.Fatal(err)
	}
	if *check {
		cwd, _ := os.Getwd()
		fmt.Printf("greeting=%s uid=%d cwd=%s mode=%s\n",
			strings.TrimSpace(string(greeting)), os.Getuid(), cwd, os.Getenv("SERVICE_MODE"))
		return
	}
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s\n", strings.TrimSpace(string(greeting)))
	})
	log.Fatal(http.ListenAndServe(*listen, nil))
}
