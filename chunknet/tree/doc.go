// Package tree turns a file's bytes into content-addressed chunks and back.
// It is pure logic: no network, no FUSE, no disk. Chunks go out through a
// [Sink] and come back through a [Fetcher]; chunknet and index provide the
// real ones, [MemStore] is the in-memory one for tests.
//
// # Format
//
// This layout is an on-disk and wire format: namespace records carry a
// [Version], and every peer must cut and read files identically, so that
// identical content gets identical chunk names everywhere. Changing any
// number or rule below is a format change. The sizes (ChunkSize, Fanout,
// MaxNodeSize) are defined once, in index/format, for every package.
//
// Data chunks. A file of Size bytes is cut at fixed offsets into
// LeafCount(Size) = ceil(Size/ChunkSize) data chunks ("leaves"). Chunk i
// (0-based) holds bytes [i*ChunkSize, min((i+1)*ChunkSize, Size)): every
// chunk has exactly ChunkSize = 512 bytes except the last, which has
// 1..512. An empty file has no chunk. A chunk is named by the SHA-256 of its
// bytes ([format.Hash]).
//
// Nodes. The list of leaf hashes is stored as a tree of nodes. A node is the
// plain concatenation of its children's 32-byte hashes, with no header,
// length or padding: 1..Fanout = 256 children, so 32..MaxNodeSize = 8192
// bytes. A node is named by the SHA-256 of those bytes and is stored and
// exchanged exactly like a data chunk (a store cannot tell them apart).
//
// Levels. Level 0 is the list of the L = LeafCount(Size) leaf hashes. Level
// k ≥ 1 is made by cutting the list of level k-1 hashes into consecutive
// groups of Fanout, the last group possibly shorter, each group being one
// node; so level k has
//
//	count(0) = L,   count(k) = ceil(count(k-1) / Fanout)
//
// entries, and node j of level k has the children j*Fanout ..
// min((j+1)*Fanout, count(k-1)) - 1 of level k-1: every node is full except
// the last one of each level (left-packed). Levels are stacked until one
// holds a single entry, the root.
//
// Version. A version is the triple (Size, Root, Depth):
//
//	Size == 0:        Depth 0, Root = zero hash (no chunk at all)
//	1 ≤ Size ≤ 512:   Depth 0, Root = hash of the single data chunk
//	Size > 512:       Depth = smallest d with Fanout^d ≥ L, Root = the only
//	                  node of level d
//
// Depth is therefore a function of Size ([DepthFor](LeafCount(Size))) and
// [Version.Validate] rejects any other value. Size is at most MaxFileSize =
// 2^60 (depth 7); MaxDepth = 8 is the hard limit of the layout.
//
// Addressing. Because nodes are left-packed, the path to chunk i is pure
// arithmetic: at level k its ancestor is entry i / Fanout^k, which is child
// number (i / Fanout^(k-1)) mod Fanout of its parent. A reader that knows a
// version knows, before fetching anything, how many children each node must
// have (count(k-1) - j*Fanout, capped at Fanout, for node j of level k) and
// how many bytes each data chunk must have ([LeafSize]); any difference is
// [ErrCorrupt].
//
// Example: a 2 GiB file has 4194304 leaves, 16384 full level-1 nodes, 64
// full level-2 nodes and one level-3 root with 64 children: Depth 3.
//
// Groups. The data chunks under one level-1 node (at most Fanout of them,
// 128 KiB) form a group, named by that node's hash; the single chunk of a
// depth-0 file is a group of its own, named by its hash. Stores keep and
// place a group as one unit, its chunks back to back with holes left out,
// so the Builder hands chunks to the [Sink] by group (PutLeaf, EndGroup),
// and readers ask for [Span]s: runs of a group's leaves with the place of
// the first stored one. A group is either built from new bytes or reused
// whole from an existing version (AddLeaf of exactly its leaves); the
// Builder refuses a group that mixes the two, whose chunks no store would
// hold together.
//
// # Costs
//
// A [Builder] holds at most one partial chunk and one partial node per level
// (Depth × MaxNodeSize bytes), whatever the file size: each node goes to the
// Sink as soon as it is full. [Leaves], [Spans] and [ReadAt] fetch one
// batch per tree level plus one batch of data chunks (FetchSpans), never
// one request per chunk.
//
// # Concurrency
//
// A Builder belongs to one goroutine. [Leaves], [ReadAt] and [Nodes] keep no
// state and may run concurrently if their Fetcher allows it. MemStore is
// safe for concurrent use.
//
// Verifying fetched bytes against their hash is the Fetcher's job (done once,
// on the receive path); this package checks only the structure: node
// lengths, child counts and data chunk lengths.
package tree
