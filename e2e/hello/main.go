// Command hello prints a greeting and exits; the end-to-end test runs it through CRI.
package main

import "fmt"

func main() {
	fmt.Println("Hello world")
}
