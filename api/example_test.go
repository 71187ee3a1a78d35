package api_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"

	"github.com/ztgate/ztgate/api"
	"github.com/ztgate/ztgate/policy"
)

// An explain request as the client sends it to PathExplain.
func ExampleExplainRequest() {
	q := api.ExplainRequest{From: "cam-07", To: "gateway", Proto: "tcp", Port: 443}
	b, err := json.Marshal(q)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("POST", api.PathExplain, string(b))
	// Output:
	// POST /v1/explain {"from":"cam-07","to":"gateway","proto":"tcp","port":443}
}

// The problems of an invalid policy travel as FieldErrors, each located in its file.
func ExampleFieldErrors() {
	_, err := policy.Parse("site.yaml", []byte("apiVersion: ztgate/v2\nkind: Policy\nmetadata: {name: site}\n"))
	e := &api.Error{Kind: api.KindInvalidPolicy, Message: "invalid policy", Fields: api.FieldErrors(err)}
	fmt.Println(e)
	// Output:
	// invalid policy
	// site.yaml:1:13: apiVersion: must be "ztgate/v1", got "ztgate/v2"
}

// A client whose agent does not run fails with an *ErrUnreachable.
func ExampleClient_Status() {
	c := api.NewClient("/nonexistent/ztgate.sock")
	defer c.Close()
	_, err := c.Status(context.Background())
	var ur *api.ErrUnreachable
	fmt.Println(errors.As(err, &ur), ur.Socket, errors.Is(err, fs.ErrNotExist))
	// Output:
	// true /nonexistent/ztgate.sock true
}
