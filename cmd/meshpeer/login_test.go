package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/meshbroker/meshbroker/internal/brokertest"
	"github.com/meshbroker/meshbroker/internal/testdb"
)

// Device-code login: meshpeer shows where and what to approve, waits, and keeps the bearer,
// which then lists the account's meshes.
func TestLoginWithADeviceCode(t *testing.T) {
	old := loginPoll
	loginPoll = 50 * time.Millisecond
	defer func() { loginPoll = old }()
	d := testdb.New(t)
	inst := brokertest.Start(t, map[string]string{"DATABASE_URL": d.URL, "BROKER_APP_SECRET": "app-secret-for-the-test-0123456789"})
	home := filepath.Join(t.TempDir(), "h")
	errOut := &syncBuffer{}
	var out bytes.Buffer
	done := make(chan error, 1)
	go func() {
		done <- run(context.Background(), []string{"login", "-home", home, "-url", inst.WS}, &out, errOut)
	}()
	waitFor(t, errOut, "waiting for the approval")
	code := regexp.MustCompile(`enter the code ([A-Z0-9]{4}-[A-Z0-9]{4})`).FindStringSubmatch(errOut.String())
	if code == nil {
		t.Fatalf("no user code shown: %s", errOut.String())
	}
	base := "http" + strings.TrimPrefix(strings.TrimSuffix(inst.WS, "/ws"), "ws")
	body := strings.NewReader(`{"user_id":"u-ann","email":"ann@example.com","name":"Ann"}`)
	req, _ := http.NewRequest(http.MethodPost, base+"/cli/device-code/"+code[1]+"/approve", body)
	req.Header.Set("Authorization", "Bearer app-secret-for-the-test-0123456789")
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("approve: %v %v", resp, err)
	}
	resp.Body.Close()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("login: %v (%s)", err, errOut.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("login did not finish after the approval")
	}
	if !strings.Contains(out.String(), "logged in to "+base+" as Ann (u-ann)") {
		t.Fatalf("login said %q", out.String())
	}
	// The bearer works: the account owns a mesh, and meshes lists it.
	if _, err := d.Pool.Exec(context.Background(), `INSERT INTO meshes (id, name, slug, owner_user_id) VALUES ('m-ann', 'Ann''s', 'anns', 'u-ann')`); err != nil {
		t.Fatal(err)
	}
	var meshes []map[string]any
	if err := json.Unmarshal([]byte(meshpeerRun(t, "meshes", "-home", home, "-json")), &meshes); err != nil || len(meshes) != 1 || meshes[0]["slug"] != "anns" {
		t.Fatalf("meshes: %v %v", meshes, err)
	}
	who := meshpeerRun(t, "whoami", "-home", home, "-json")
	if strings.Contains(who, "token") || !strings.Contains(who, "ann@example.com") {
		t.Fatalf("whoami shows the bearer, or not the login: %s", who)
	}
}
