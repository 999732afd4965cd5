//! YAML as a tree whose every node knows its line and column, built from
//! yaml-rust2's event parser: the rules model needs positions for its errors, and
//! validate needs a parse error's place in any YAML file.

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

use crate::json_text::Position;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub value: Value,
    pub at: Position,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// A scalar as written; `quoted` scalars are never booleans or numbers.
    Scalar {
        text: String,
        quoted: bool,
    },
    Sequence(Vec<Node>),
    /// Key-value pairs in the order written.
    Mapping(Vec<(Node, Node)>),
    /// An alias (`*name`): the rules file does not support them.
    Alias,
}

/// A YAML syntax error and where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    pub message: String,
    pub at: Position,
}

fn position(mark: Marker) -> Position {
    // yaml-rust2 counts lines from 1 and columns from 0.
    Position {
        line: mark.line(),
        column: mark.col() + 1,
    }
}

/// Whether `text` is well-formed YAML (any number of documents).
pub fn check_syntax(text: &str) -> Result<(), SyntaxError> {
    struct Ignore;
    impl MarkedEventReceiver for Ignore {
        fn on_event(&mut self, _: Event, _: Marker) {}
    }
    Parser::new_from_str(text)
        .load(&mut Ignore, true)
        .map_err(|e| SyntaxError {
            message: e.info().to_owned(),
            at: position(*e.marker()),
        })
}

/// The first document of `text` as a tree; `None` for an empty stream.
pub fn parse(text: &str) -> Result<Option<Node>, SyntaxError> {
    let mut builder = Builder::default();
    Parser::new_from_str(text)
        .load(&mut builder, false)
        .map_err(|e| SyntaxError {
            message: e.info().to_owned(),
            at: position(*e.marker()),
        })?;
    Ok(builder.done)
}

/// A collection under construction; a mapping holds its key until the value comes.
enum Open {
    Sequence(Position, Vec<Node>),
    Mapping(Position, Vec<(Node, Node)>, Option<Node>),
}

/// Collections under construction, innermost last.
#[derive(Default)]
struct Builder {
    open: Vec<Open>,
    done: Option<Node>,
}

impl Builder {
    fn add(&mut self, node: Node) {
        match self.open.last_mut() {
            None => {
                self.done.get_or_insert(node);
            }
            Some(Open::Sequence(_, items)) => items.push(node),
            Some(Open::Mapping(_, pairs, key)) => match key.take() {
                Some(key) => pairs.push((key, node)),
                None => *key = Some(node),
            },
        }
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, event: Event, mark: Marker) {
        let at = position(mark);
        match event {
            Event::Scalar(text, style, _, _) => self.add(Node {
                value: Value::Scalar {
                    text,
                    quoted: style != TScalarStyle::Plain,
                },
                at,
            }),
            Event::SequenceStart(..) => self.open.push(Open::Sequence(at, Vec::new())),
            Event::MappingStart(..) => self.open.push(Open::Mapping(at, Vec::new(), None)),
            Event::SequenceEnd | Event::MappingEnd => {
                let node = match self.open.pop().expect("the parser balances collections") {
                    Open::Sequence(at, items) => Node {
                        value: Value::Sequence(items),
                        at,
                    },
                    Open::Mapping(at, pairs, _) => Node {
                        value: Value::Mapping(pairs),
                        at,
                    },
                };
                self.add(node);
            }
            Event::Alias(_) => self.add(Node {
                value: Value::Alias,
                at,
            }),
            _ => {}
        }
    }
}

impl Node {
    /// The scalar's text, if this is a scalar.
    pub fn scalar(&self) -> Option<&str> {
        match &self.value {
            Value::Scalar { text, .. } => Some(text),
            _ => None,
        }
    }

    /// What kind of node this is, for messages.
    pub fn kind(&self) -> &'static str {
        match self.value {
            Value::Scalar { .. } => "a scalar",
            Value::Sequence(_) => "a list",
            Value::Mapping(_) => "a mapping",
            Value::Alias => "an alias",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(line: usize, column: usize) -> Position {
        Position { line, column }
    }

    #[test]
    fn nodes_keep_their_positions() {
        let text = "service:\n  containerd:\n    enabled: true\n    running: \"yes\"\n";
        let root = parse(text).unwrap().unwrap();
        let Value::Mapping(top) = &root.value else {
            panic!("{root:?}")
        };
        assert_eq!(top[0].0.scalar(), Some("service"));
        assert_eq!(top[0].0.at, at(1, 1));
        let Value::Mapping(services) = &top[0].1.value else {
            panic!()
        };
        assert_eq!(services[0].0.at, at(2, 3));
        let Value::Mapping(attrs) = &services[0].1.value else {
            panic!()
        };
        assert_eq!(attrs[0].0.scalar(), Some("enabled"));
        assert_eq!(attrs[0].1.at, at(3, 14));
        assert_eq!(
            attrs[1].1.value,
            Value::Scalar {
                text: "yes".into(),
                quoted: true
            }
        );
    }

    #[test]
    fn sequences_and_empty_values() {
        let root = parse("a:\n  - x\n  - y\nb:\n").unwrap().unwrap();
        let Value::Mapping(pairs) = &root.value else {
            panic!()
        };
        assert_eq!(pairs.len(), 2);
        assert!(matches!(&pairs[0].1.value, Value::Sequence(items) if items.len() == 2));
        assert_eq!(pairs[1].1.scalar(), Some(""));
        assert_eq!(parse("").unwrap(), None);
    }

    #[test]
    fn an_unclosed_flow_sequence_is_located() {
        let text = "---\n- name: ok\n  debug: {}\n- name: [unclosed\n";
        let err = check_syntax(text).unwrap_err();
        assert_eq!(err.at.line, 5, "{err:?}");
        assert!(err.message.contains("flow sequence"), "{err:?}");
        assert_eq!(parse(text).unwrap_err(), err);
    }

    #[test]
    fn several_documents_are_well_formed() {
        assert!(check_syntax("a: 1\n---\nb: 2\n").is_ok());
    }
}
