package content

import (
	"bytes"
	"slices"
	"testing"
)

func TestExtents(t *testing.T) {
	var x extents
	for _, c := range []struct {
		s, e int
		want extents
	}{
		{10, 20, extents{{10, 20}}},
		{30, 40, extents{{10, 20}, {30, 40}}},
		{20, 25, extents{{10, 25}, {30, 40}}}, // touching merges
		{5, 5, extents{{10, 25}, {30, 40}}},   // empty: nothing
		{0, 3, extents{{0, 3}, {10, 25}, {30, 40}}},
		{2, 35, extents{{0, 40}}},
		{50, 60, extents{{0, 40}, {50, 60}}},
	} {
		x = x.add(c.s, c.e)
		if !slices.Equal(x, c.want) {
			t.Fatalf("add(%d, %d) = %v, want %v", c.s, c.e, x, c.want)
		}
	}
	if !x.covers(40) || x.covers(41) || (extents{{1, 9}}).covers(5) {
		t.Fatal("covers")
	}
	dst := bytes.Repeat([]byte{'b'}, 8)
	extents{{1, 3}, {6, 12}}.apply(dst, []byte("xwwxxxwwwwww"[:7]))
	if string(dst) != "bwwbbbwb" {
		t.Fatalf("apply: %q", dst)
	}
}

// TestRandomWritesFetchNothing: writes into blocks of a stored file that
// are not cached issue no GET (partial blocks); a read of such a block
// merges it with its base, and a sync stores the merge, in ranged GETs.
func TestRandomWritesFetchNothing(t *testing.T) {
	for _, sf := range stores() {
		for _, m := range modes(t) {
			t.Run(sf.name+"/"+m.name, func(t *testing.T) {
				ctx := testCtx(t)
				v := newEnv(t, sf.new(t), m.keys, nil)
				bs := int(v.eng.bs)
				model := pattern(40*bs+123, 1)
				f := v.eng.Create("r", nil)
				writeSeq(t, f, model, bs)
				mustSync(t, f)
				v.freshCache(t)
				f = v.reopenLogged(ctx, "r")
				gets := v.store.gets.Load()
				for k := range 30 {
					off := (k*7919)%(len(model)-20) + 1
					data := pattern(1+k%17, 100+k)
					mustWrite(t, f, data, int64(off))
					copy(model[off:], data)
				}
				if n := v.store.gets.Load() - gets; n != 0 {
					t.Fatalf("30 small writes into stored blocks issued %d GETs, want 0", n)
				}
				// A read of a partial block merges it with its base.
				buf := make([]byte, 3*bs)
				if _, err := f.ReadAt(ctx, buf, int64(5*bs)); err != nil || !bytes.Equal(buf, model[5*bs:8*bs]) {
					t.Fatalf("read over partial blocks: %v", err)
				}
				gets = v.store.gets.Load()
				mustSync(t, f)
				if n := v.store.gets.Load() - gets; n > 3 {
					t.Fatalf("sync fetched the base in %d GETs, want a few ranged ones", n)
				}
				if got := readAll(t, ctx, f); !bytes.Equal(got, model) {
					t.Fatal("content after sync differs (cache)")
				}
				v.freshCache(t)
				if got := readAll(t, ctx, v.reopen(ctx, "r")); !bytes.Equal(got, model) {
					t.Fatal("content after sync differs (store)")
				}
			})
		}
	}
}

// TestPartialBlockTruncateAndSpill: a partial block cut by a truncate, grown
// again, and spilled to the spool keeps exactly the right bytes.
func TestPartialBlockTruncateAndSpill(t *testing.T) {
	for _, m := range modes(t) {
		t.Run(m.name, func(t *testing.T) {
			ctx := testCtx(t)
			v := newEnv(t, stores()[1].new(t), m.keys, func(o *Options) { o.MaxDirty = 1 })
			bs := int(v.eng.bs)
			model := pattern(6*bs, 2)
			f := v.eng.Create("p", nil)
			writeSeq(t, f, model, bs)
			mustSync(t, f)
			v.freshCache(t)
			f = v.reopen(ctx, "p")
			write := func(off int, data []byte) {
				t.Helper()
				mustWrite(t, f, data, int64(off))
				if end := off + len(data); end > len(model) {
					model = append(model, make([]byte, end-len(model))...)
				}
				copy(model[off:], data)
			}
			write(2*bs+100, []byte("partial two"))
			write(3*bs+10, []byte("partial three"))
			write(4*bs+5, []byte("partial four")) // each write spills the others (MaxDirty 1)
			if err := f.Truncate(ctx, int64(3*bs+15)); err != nil {
				t.Fatal(err)
			}
			model = model[:3*bs+15]
			write(3*bs+200, []byte("after the cut"))
			if got := readAll(t, ctx, f); !bytes.Equal(got, model) {
				t.Fatal("content before sync differs")
			}
			mustSync(t, f)
			v.freshCache(t)
			if got := readAll(t, ctx, v.reopen(ctx, "p")); !bytes.Equal(got, model) {
				t.Fatal("content after sync differs")
			}
		})
	}
}
