package fs

import gofs "github.com/hanwen/go-fuse/v2/fs"

// Compile-time checks that every node implements the operations this
// filesystem promises (docs/SEMANTICS.md lists them per system call). A
// missing method would silently fall back to go-fuse's default (often
// ENOTSUP or, worse, success), so the list is kept honest here.
var (
	_ = (gofs.NodeLookuper)((*Dir)(nil))
	_ = (gofs.NodeReaddirer)((*Dir)(nil))
	_ = (gofs.NodeGetattrer)((*Dir)(nil))
	_ = (gofs.NodeSetattrer)((*Dir)(nil))
	_ = (gofs.NodeStatfser)((*Dir)(nil))
	_ = (gofs.NodeMkdirer)((*Dir)(nil))
	_ = (gofs.NodeCreater)((*Dir)(nil))
	_ = (gofs.NodeMknoder)((*Dir)(nil))
	_ = (gofs.NodeLinker)((*Dir)(nil))
	_ = (gofs.NodeSymlinker)((*Dir)(nil))
	_ = (gofs.NodeUnlinker)((*Dir)(nil))
	_ = (gofs.NodeRmdirer)((*Dir)(nil))
	_ = (gofs.NodeRenamer)((*Dir)(nil))
	_ = (gofs.NodeFsyncer)((*Dir)(nil))

	_ = (gofs.NodeOpener)((*File)(nil))
	_ = (gofs.NodeGetattrer)((*File)(nil))
	_ = (gofs.NodeSetattrer)((*File)(nil))

	_ = (gofs.FileReader)((*handle)(nil))
	_ = (gofs.FileWriter)((*handle)(nil))
	_ = (gofs.FileFlusher)((*handle)(nil))
	_ = (gofs.FileFsyncer)((*handle)(nil))
	_ = (gofs.FileReleaser)((*handle)(nil))
	_ = (gofs.FileGetattrer)((*handle)(nil))

	_ = (gofs.NodeReadlinker)((*Symlink)(nil))
	_ = (gofs.NodeGetattrer)((*Symlink)(nil))
	_ = (gofs.NodeSetattrer)((*Symlink)(nil))

	_ = (gofs.NodeGetattrer)((*Special)(nil))
	_ = (gofs.NodeSetattrer)((*Special)(nil))

	_ = (gofs.NodeOnForgetter)((*Dir)(nil))
	_ = (gofs.NodeOnForgetter)((*File)(nil))
	_ = (gofs.NodeOnForgetter)((*Symlink)(nil))
	_ = (gofs.NodeOnForgetter)((*Special)(nil))

	_ = (xattrNode)((*Dir)(nil))
	_ = (xattrNode)((*File)(nil))
	_ = (xattrNode)((*Symlink)(nil))
	_ = (xattrNode)((*Special)(nil))
	_ = (gofs.NodeGetxattrer)((*Dir)(nil))
	_ = (gofs.NodeSetxattrer)((*File)(nil))
	_ = (gofs.NodeListxattrer)((*Symlink)(nil))
	_ = (gofs.NodeRemovexattrer)((*Special)(nil))

	_ = (node)((*Special)(nil))
	_ = (node)((*Dir)(nil))
	_ = (node)((*File)(nil))
	_ = (node)((*Symlink)(nil))
)
