//! A position-keeping view of the YAML document.
//!
//! `serde_yaml` reports a position only for the first error it meets, and none for values that
//! parse fine but break a rule (a bad name, a duplicate label). This tree, built from
//! yaml-rust2's marked events, lets every check point at the line and column of what it
//! complains about, and lets corral list every unknown field at once.

use std::collections::BTreeMap;
use std::fmt;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, ScanError};

/// A 1-based line and column in the config file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Position {
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

impl From<Marker> for Position {
    fn from(mark: Marker) -> Self {
        // yaml-rust2 counts lines from 1 and columns from 0.
        Position {
            line: mark.line(),
            column: mark.col() + 1,
        }
    }
}

/// One YAML node with where it starts.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// Where the node starts.
    pub pos: Position,
    /// What it is.
    pub kind: NodeKind,
}

/// The shape of a node.
#[derive(Debug, Clone, PartialEq)]
pub enum NodeKind {
    /// A scalar, as written.
    Scalar(String),
    /// A sequence.
    Seq(Vec<Node>),
    /// A mapping; keys keep their own positions.
    Map(Vec<(Key, Node)>),
    /// An alias (`*name`); not followed.
    Alias,
}

/// A mapping key.
#[derive(Debug, Clone, PartialEq)]
pub struct Key {
    /// The key text (`?` for a non-scalar key).
    pub name: String,
    /// Where the key is written.
    pub pos: Position,
}

/// A YAML syntax error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    /// Where the parser stopped.
    pub pos: Position,
    /// What it says.
    pub message: String,
}

/// Parses the first document of `text`. An empty document gives `None`.
pub fn parse(text: &str) -> Result<Option<Node>, SyntaxError> {
    let mut builder = Builder::default();
    Parser::new_from_str(text)
        .load(&mut builder, false)
        .map_err(|err: ScanError| SyntaxError {
            pos: Position::from(*err.marker()),
            message: err.info().to_string(),
        })?;
    Ok(builder.root)
}

#[derive(Default)]
struct Builder {
    stack: Vec<Frame>,
    root: Option<Node>,
}

enum Frame {
    Seq(Position, Vec<Node>),
    Map(Position, Vec<(Key, Node)>, Option<Key>),
}

impl Builder {
    fn push_node(&mut self, node: Node) {
        match self.stack.last_mut() {
            None => {
                if self.root.is_none() {
                    self.root = Some(node);
                }
            }
            Some(Frame::Seq(_, items)) => items.push(node),
            Some(Frame::Map(_, entries, pending)) => {
                if let Some(key) = pending.take() {
                    entries.push((key, node));
                } else {
                    let name = match &node.kind {
                        NodeKind::Scalar(s) => s.clone(),
                        _ => "?".to_string(),
                    };
                    *pending = Some(Key {
                        name,
                        pos: node.pos,
                    });
                }
            }
        }
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        let pos = Position::from(mark);
        match ev {
            Event::Scalar(value, ..) => self.push_node(Node {
                pos,
                kind: NodeKind::Scalar(value),
            }),
            Event::Alias(_) => self.push_node(Node {
                pos,
                kind: NodeKind::Alias,
            }),
            Event::SequenceStart(..) => self.stack.push(Frame::Seq(pos, Vec::new())),
            Event::MappingStart(..) => self.stack.push(Frame::Map(pos, Vec::new(), None)),
            Event::SequenceEnd | Event::MappingEnd => {
                let node = match self.stack.pop() {
                    Some(Frame::Seq(pos, items)) => Node {
                        pos,
                        kind: NodeKind::Seq(items),
                    },
                    Some(Frame::Map(pos, entries, _)) => Node {
                        // yaml-rust2 marks a block mapping at its first `:`; its first key is
                        // where a reader sees it start.
                        pos: entries.first().map_or(pos, |(key, _)| key.pos),
                        kind: NodeKind::Map(entries),
                    },
                    None => return,
                };
                self.push_node(node);
            }
            _ => {}
        }
    }
}

impl Node {
    /// Every node's position by its field path (`runners[0].labels[1]`); mapping keys are
    /// recorded as `path.key#key` so errors about a key itself can point at it.
    pub fn positions(&self) -> BTreeMap<String, Position> {
        let mut out = BTreeMap::new();
        self.collect_positions(String::new(), &mut out);
        out
    }

    fn collect_positions(&self, path: String, out: &mut BTreeMap<String, Position>) {
        match &self.kind {
            NodeKind::Seq(items) => {
                for (i, item) in items.iter().enumerate() {
                    item.collect_positions(format!("{path}[{i}]"), out);
                }
            }
            NodeKind::Map(entries) => {
                for (key, value) in entries {
                    let child = join(&path, &key.name);
                    out.insert(format!("{child}#key"), key.pos);
                    value.collect_positions(child, out);
                }
            }
            NodeKind::Scalar(_) | NodeKind::Alias => {}
        }
        out.insert(path, self.pos);
    }
}

/// Joins a field path and a key the way error messages print them.
pub fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_one_based_and_keyed_by_path() {
        let text = "base:\n  path: ./b\nrunners:\n  - name: web\n    labels: [a, b]\n";
        let root = parse(text).expect("valid yaml").expect("non-empty");
        let pos = root.positions();
        assert_eq!(pos["base.path"], Position { line: 2, column: 9 });
        assert_eq!(
            pos["runners[0].name"],
            Position {
                line: 4,
                column: 11
            }
        );
        assert_eq!(pos["runners[0].name#key"], Position { line: 4, column: 5 });
        assert_eq!(
            pos["runners[0].labels[1]"],
            Position {
                line: 5,
                column: 17
            }
        );
    }

    #[test]
    fn syntax_error_has_a_position() {
        let err = parse("base:\n  path: [unclosed\n").expect_err("broken yaml");
        assert!(err.pos.line >= 2, "{err:?}");
    }

    #[test]
    fn empty_document_is_none() {
        assert_eq!(parse("# only a comment\n").expect("valid"), None);
    }
}
