package content

// extents are the byte ranges [start, end) of a partially written dirty
// block that hold written data: sorted, disjoint and not adjacent. A
// partial block's other bytes stand for the base version's, which were
// never fetched: a random write into a stored file costs no GET, and the
// base block is merged in when the block is read, truncated or uploaded
// (an upload re-encrypts the whole file in one streaming pass anyway).
type extents [][2]int

// add returns x with [s, e) added (merging what it overlaps or touches).
func (x extents) add(s, e int) extents {
	if s >= e {
		return x
	}
	out := make(extents, 0, len(x)+1)
	i := 0
	for ; i < len(x) && x[i][1] < s; i++ {
		out = append(out, x[i])
	}
	for ; i < len(x) && x[i][0] <= e; i++ {
		s, e = min(s, x[i][0]), max(e, x[i][1])
	}
	out = append(out, [2]int{s, e})
	return append(out, x[i:]...)
}

// covers reports whether [0, n) is written.
func (x extents) covers(n int) bool {
	return len(x) > 0 && x[0][0] == 0 && x[0][1] >= n
}

// apply copies the written ranges of src (the partial block's bytes) over
// dst (the merged block), clipped to both lengths.
func (x extents) apply(dst, src []byte) {
	for _, r := range x {
		s, e := r[0], min(r[1], len(src), len(dst))
		if s < e {
			copy(dst[s:e], src[s:e])
		}
	}
}
