// kstatus reads Kubernetes objects as JSON (one per line) on stdin and prints, for each, the status the
// kstatus library (sigs.k8s.io/cli-utils/pkg/kstatus, which Flux and kpt use) computes for it:
// `<status>\t<message>`, one line per object. Used by tests/kstatus.rs to check Lifeboat's statuses
// against the real library.
package main

import (
	"bufio"
	"fmt"
	"os"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

func main() {
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 1024*1024), 16*1024*1024)
	for in.Scan() {
		if len(in.Bytes()) == 0 {
			continue
		}
		// UnmarshalJSON keeps integers int64, as the API machinery reads them.
		obj := &unstructured.Unstructured{}
		if err := obj.UnmarshalJSON(in.Bytes()); err != nil {
			fmt.Fprintln(os.Stderr, "kstatus: not a Kubernetes object:", err)
			os.Exit(2)
		}
		res, err := status.Compute(obj)
		if err != nil {
			fmt.Printf("Error\t%s\n", err)
			continue
		}
		fmt.Printf("%s\t%s\n", res.Status, res.Message)
	}
	if err := in.Err(); err != nil {
		fmt.Fprintln(os.Stderr, "kstatus:", err)
		os.Exit(2)
	}
}
