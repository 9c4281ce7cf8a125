package session_test

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshbroker/meshbroker/db"
	"github.com/meshbroker/meshbroker/internal/brokertest"
	"github.com/meshbroker/meshbroker/internal/client"
	"github.com/meshbroker/meshbroker/internal/testdb"
)

// A client_ack receiver that drops mid-stream and reconnects to the other instance loses
// nothing, and sees again only messages it had received but whose acknowledgement may not
// have landed before the drop — never one first delivered after the reconnect.
func TestClientAckReceiverDropsMidStream(t *testing.T) {
	t.Parallel()
	d := testdb.New(t)
	ids := brokertest.Mesh(t, db.New(d.Pool), "alice", "bob")
	env := map[string]string{"DATABASE_URL": d.URL, "SEND_RATE_LIMIT_PER_MIN": "0"}
	i1 := brokertest.Start(t, env)
	i2 := brokertest.Start(t, env)
	ctx := within(t, 60*time.Second)
	_, bobSess := client.NewKey()
	opts := client.Options{SessionKey: bobSess, Capabilities: []string{"client_ack"}}
	alice, err := client.Dial(ctx, i1.WS, ids["alice"], client.Options{SessionID: "a"})
	if err != nil {
		t.Fatal(err)
	}
	defer alice.Close()
	bob, err := client.Dial(ctx, i1.WS, ids["bob"], opts)
	if err != nil {
		t.Fatal(err)
	}

	const total = 200
	sent := make(chan string, total)
	go func() {
		defer close(sent)
		for i := range total {
			ack, err := alice.Send(ctx, client.Message{Target: ids["bob"].Pubkey, Priority: "now", Nonce: "n", Ciphertext: "eA==", ClientMessageID: "s" + itoa(i)})
			if err != nil || ack["queued"] != true {
				t.Errorf("send %d: %v %v", i, ack, err)
				return
			}
			sent <- ack.Str("messageId")
			time.Sleep(2 * time.Millisecond) // a steady stream, not one burst
		}
	}()

	seen := map[string]int{}
	beforeDrop := map[string]bool{}
	receive := func(c *client.Client, until func() bool) {
		for !until() {
			p, err := c.NextMessage(ctx)
			if err != nil {
				t.Fatalf("receiving: %v (have %d)", err, len(seen))
			}
			id := p.Str("messageId")
			seen[id]++
			if err := c.Write(ctx, map[string]any{"type": "client_ack", "messageId": id}); err != nil {
				t.Fatal(err)
			}
		}
	}
	receive(bob, func() bool { return len(seen) >= 50 })
	for id := range seen {
		beforeDrop[id] = true
	}
	_ = bob.Drop()

	back, err := client.Dial(ctx, i2.WS, ids["bob"], opts)
	if err != nil {
		t.Fatal(err)
	}
	defer back.Close()
	var all []string
	for id := range sent {
		all = append(all, id)
	}
	if len(all) != total {
		t.Fatalf("only %d of %d sends acked", len(all), total)
	}
	receive(back, func() bool {
		for _, id := range all {
			if seen[id] == 0 {
				return false
			}
		}
		return true
	})
	dups := 0
	for id, n := range seen {
		if n > 1 {
			dups++
			if !beforeDrop[id] {
				t.Errorf("message %s first delivered after the reconnect was delivered %d times", id, n)
			}
		}
	}
	t.Logf("%d messages, %d received before the drop, %d redelivered after it", total, len(beforeDrop), dups)
}

func itoa(i int) string {
	if i == 0 {
		return "0"
	}
	var b []byte
	for ; i > 0; i /= 10 {
		b = append([]byte{byte('0' + i%10)}, b...)
	}
	return string(b)
}

// Pushes to one recipient keep the order its messages were stored in, while several claim
// workers run: four senders stream to bob at once, and each sender's messages reach bob in
// the order that sender sent them (each send waits for its ack, so that is storage order).
func TestPushesToOneRecipientKeepStoredOrder(t *testing.T) {
	t.Parallel()
	d := testdb.New(t)
	ids := brokertest.Mesh(t, db.New(d.Pool), "s0", "s1", "s2", "s3", "bob")
	i1 := brokertest.Start(t, map[string]string{"DATABASE_URL": d.URL, "SEND_RATE_LIMIT_PER_MIN": "0"})
	ctx := within(t, 60*time.Second)
	bob, err := client.Dial(ctx, i1.WS, ids["bob"], client.Options{SessionID: "b"})
	if err != nil {
		t.Fatal(err)
	}
	defer bob.Close()
	const senders, each = 4, 100
	// Bob may receive a sender's last push before that sender has read its ack (two sockets,
	// no order between them): the senders are waited for before their sockets close.
	var sending sync.WaitGroup
	for s := range senders {
		name := "s" + itoa(s)
		c, err := client.Dial(ctx, i1.WS, ids[name], client.Options{SessionID: name})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		sending.Add(1)
		go func() {
			defer sending.Done()
			for i := range each {
				ack, err := c.Send(ctx, client.Message{Target: ids["bob"].Pubkey, Priority: "now", Nonce: "n", Ciphertext: "eA==", ClientMessageID: name + "-" + itoa(i)})
				if err != nil || ack["queued"] != true {
					t.Errorf("%s send %d: %v %v", name, i, ack, err)
					return
				}
			}
		}()
	}
	defer sending.Wait() // runs before the deferred closes above
	next := map[string]int{}
	for range senders * each {
		p, err := bob.NextMessage(ctx)
		if err != nil {
			t.Fatalf("receiving: %v (have %v)", err, next)
		}
		var name string
		var i int
		if _, err := fmt.Sscanf(strings.Replace(p.Str("clientMessageId"), "-", " ", 1), "%s %d", &name, &i); err != nil {
			t.Fatalf("clientMessageId %q: %v", p.Str("clientMessageId"), err)
		}
		if i != next[name] {
			t.Fatalf("from %s: message %d arrived when %d was next", name, i, next[name])
		}
		next[name]++
	}
}
