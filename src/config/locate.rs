//! Maps a key path (`credentials.sf.token_url`, `routes[2].host`) to its line in the YAML text,
//! so that errors found after deserialisation can still name the line.

use std::collections::HashMap;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

enum Frame {
    Map {
        path: String,
        key: Option<String>,
        /// Keys seen so far in this mapping, with their lines.
        seen: HashMap<String, usize>,
    },
    Seq {
        path: String,
        index: usize,
    },
}

/// A key written twice in one mapping: YAML parsers keep only the last.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Duplicate {
    pub path: String,
    pub first_line: usize,
    pub line: usize,
}

#[derive(Default)]
struct Collector {
    stack: Vec<Frame>,
    lines: HashMap<String, usize>,
    duplicates: Vec<Duplicate>,
}

impl Collector {
    /// The path of a node that starts now, or None when the node is a mapping key.
    fn node_path(&mut self) -> Option<String> {
        match self.stack.last_mut() {
            None => Some(String::new()),
            Some(Frame::Seq { path, index }) => {
                let p = format!("{path}[{index}]");
                *index += 1;
                Some(p)
            }
            Some(Frame::Map { path, key, .. }) => key.take().map(|k| join(path, &k)),
        }
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

impl MarkedEventReceiver for Collector {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        let line = mark.line();
        match ev {
            Event::Scalar(value, ..) => match self.node_path() {
                Some(p) => {
                    self.lines.entry(p).or_insert(line);
                }
                None => {
                    if let Some(Frame::Map { path, key, seen }) = self.stack.last_mut() {
                        let full = join(path, &value);
                        if let Some(&first_line) = seen.get(&value) {
                            self.duplicates.push(Duplicate {
                                path: full.clone(),
                                first_line,
                                line,
                            });
                        }
                        seen.entry(value.clone()).or_insert(line);
                        self.lines.entry(full).or_insert(line);
                        *key = Some(value);
                    }
                }
            },
            Event::MappingStart(..) | Event::SequenceStart(..) => {
                let path = self.node_path().unwrap_or_default();
                self.lines.entry(path.clone()).or_insert(line);
                self.stack.push(match ev {
                    Event::MappingStart(..) => Frame::Map {
                        path,
                        key: None,
                        seen: HashMap::new(),
                    },
                    _ => Frame::Seq { path, index: 0 },
                });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
            }
            Event::Alias(_) => {
                self.node_path();
            }
            _ => {}
        }
    }
}

/// Line numbers (1-based) of every key path in a YAML document.
pub struct Locator {
    lines: HashMap<String, usize>,
    duplicates: Vec<Duplicate>,
}

impl Locator {
    pub fn new(text: &str) -> Self {
        let mut c = Collector::default();
        // A parse error here is reported by serde_yaml with its own location; keep what we have.
        let _ = Parser::new_from_str(text).load(&mut c, false);
        Locator {
            lines: c.lines,
            duplicates: c.duplicates,
        }
    }

    /// Keys written twice in one mapping.
    pub fn duplicates(&self) -> &[Duplicate] {
        &self.duplicates
    }

    /// The line of `path`, or of its nearest ancestor that is in the file.
    pub fn line(&self, path: &str) -> Option<usize> {
        let mut p = path;
        loop {
            if let Some(l) = self.lines.get(p) {
                return Some(*l);
            }
            let cut = p.rfind(['.', '['])?;
            p = &p[..cut];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "proxy:\n  listen: 1.2.3.4:80\ncredentials:\n  sf:\n    type: bearer\n    token: x\nroutes:\n  - host: a.com\n    credential: sf\n  - host: b.com\n    credential: nope\n";

    #[test]
    fn finds_lines() {
        let l = Locator::new(DOC);
        assert_eq!(l.line("proxy.listen"), Some(2));
        assert_eq!(l.line("credentials.sf.token"), Some(6));
        assert_eq!(l.line("routes[0].host"), Some(8));
        assert_eq!(l.line("routes[1].credential"), Some(11));
        assert_eq!(l.line("routes[1]"), Some(10));
    }

    #[test]
    fn finds_duplicate_keys() {
        let l = Locator::new("credentials:\n  gh: { type: bearer, token: a }\n  x: { type: bearer, token: b }\n  gh: { type: bearer, token: c }\nroutes:\n  - { host: a, host: b }\n");
        assert_eq!(
            l.duplicates(),
            [
                Duplicate {
                    path: "credentials.gh".into(),
                    first_line: 2,
                    line: 4
                },
                Duplicate {
                    path: "routes[0].host".into(),
                    first_line: 6,
                    line: 6
                }
            ]
        );
    }

    #[test]
    fn falls_back_to_ancestor() {
        let l = Locator::new(DOC);
        assert_eq!(l.line("credentials.sf.missing_key"), Some(4));
        assert_eq!(l.line("routes[1].methods[0]"), Some(10));
    }
}
