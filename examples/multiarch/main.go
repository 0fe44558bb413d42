// Command arch prints the architecture it was built for.
package main

import (
	"fmt"
	"runtime"
)

func main() {
	fmt.Printf("arch=%s\n", runtime.GOARCH)
}
