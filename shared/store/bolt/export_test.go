package bolt

// SetPurgeBatch makes PurgeExpired work in batches of n entries until the
// returned function restores the default. Tests that use it do not run in
// parallel.
func SetPurgeBatch(n int) (restore func()) {
	was := purgeBatch
	purgeBatch = n
	return func() { purgeBatch = was }
}
