//! node (issue 3)
