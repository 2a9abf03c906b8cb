//! The front door's check of a payload: exactly one JSON object, validated as a full parse
//! validates it, with nothing built, and the [`PayloadHead`] (repository, installation) picked
//! up on the way for the worker's order key. A leaf: the webhook handler and the worker use it.

use serde::de::{Deserialize, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

/// Why a body is not a payload.
#[derive(Debug, thiserror::Error)]
pub enum NotAPayload {
    #[error("payload is not a JSON object")]
    NotAnObject,
    #[error("payload is not JSON: {0}")]
    NotJson(serde_json::Error),
}

/// What the front door reads from a payload while checking it: the repository and the
/// installation it is about (the worker's order key, `crate::dispatch::OrderKey`), nothing else.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PayloadHead {
    /// The top-level `repository.full_name`, when it is a string.
    pub repository: Option<String>,
    /// The top-level `installation.id`, when it is a whole number.
    pub installation: Option<u64>,
}

/// Is `body` exactly one JSON object? The whole text is checked as a full parse checks it
/// (syntax, UTF-8, escapes and surrogates, numbers, nesting depth, nothing after it), but
/// nothing is built: every key and value is visited and dropped, like `IgnoredAny` does but with
/// the validation `IgnoredAny` skips (it does not decode strings). The worker parses the
/// payload fully; the front door only refuses what the worker could never read, so a burst of
/// deliveries allocates no JSON tree (at most serde_json's one scratch buffer for escapes). The
/// same pass picks up the [`PayloadHead`], so the worker orders the delivery without reading
/// its payload (docs/performance.md, round 3).
pub fn check_json_object(body: &[u8]) -> Result<PayloadHead, NotAPayload> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let head = de
        .deserialize_any(Top)
        .and_then(|head| de.end().map(|()| head))
        .map_err(NotAPayload::NotJson)?;
    head.ok_or(NotAPayload::NotAnObject)
}

/// Any JSON value, visited and dropped.
struct Skip;
impl<'de> Deserialize<'de> for Skip {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(SkipVisitor)
    }
}
struct SkipVisitor;
impl<'de> Visitor<'de> for SkipVisitor {
    type Value = Skip;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_str<E>(self, _: &str) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_unit<E>(self) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Skip, A::Error> {
        while seq.next_element::<Skip>()?.is_some() {}
        Ok(Skip)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Skip, A::Error> {
        while map.next_entry::<Skip, Skip>()?.is_some() {}
        Ok(Skip)
    }
}

/// A key, compared without keeping it.
struct Key<'k>(&'k str);
impl<'de> DeserializeSeed<'de> for Key<'_> {
    type Value = bool;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_str(self)
    }
}
impl<'de> Visitor<'de> for Key<'_> {
    type Value = bool;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a key")
    }
    fn visit_str<E>(self, v: &str) -> Result<bool, E> {
        Ok(v == self.0)
    }
}

/// One field of an object (`full_name`, `id`): its value when it has the wanted shape;
/// the object is checked whole. Anything but an object holds nothing.
struct Field<T> {
    name: &'static str,
    read: fn(&serde_json::Value) -> Option<T>,
}
impl<'de, T> DeserializeSeed<'de> for Field<T> {
    type Value = Option<T>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Option<T>, D::Error> {
        d.deserialize_any(self)
    }
}
impl<'de, T> Visitor<'de> for Field<T> {
    type Value = Option<T>;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<Option<T>, E> {
        Ok(None)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Option<T>, E> {
        Ok(None)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Option<T>, E> {
        Ok(None)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Option<T>, E> {
        Ok(None)
    }
    fn visit_str<E>(self, _: &str) -> Result<Option<T>, E> {
        Ok(None)
    }
    fn visit_unit<E>(self) -> Result<Option<T>, E> {
        Ok(None)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Option<T>, A::Error> {
        SkipVisitor.visit_seq(seq)?;
        Ok(None)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Option<T>, A::Error> {
        let mut found = None;
        while let Some(wanted) = map.next_key_seed(Key(self.name))? {
            if wanted {
                // A scalar: no tree worth the name (the last one counts, as in a parse).
                let value: serde_json::Value = map.next_value_seed(Scalar)?;
                found = (self.read)(&value);
            } else {
                map.next_value::<Skip>()?;
            }
        }
        Ok(found)
    }
}

/// A value kept only when it is a string or a number (what a field of the head can be);
/// anything else is checked and dropped, as `null`.
struct Scalar;
impl<'de> DeserializeSeed<'de> for Scalar {
    type Value = serde_json::Value;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<serde_json::Value, D::Error> {
        d.deserialize_any(self)
    }
}
impl<'de> Visitor<'de> for Scalar {
    type Value = serde_json::Value;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<serde_json::Value, E> {
        Ok(serde_json::Value::Null)
    }
    fn visit_i64<E>(self, _: i64) -> Result<serde_json::Value, E> {
        Ok(serde_json::Value::Null)
    }
    fn visit_u64<E>(self, v: u64) -> Result<serde_json::Value, E> {
        Ok(v.into())
    }
    fn visit_f64<E>(self, _: f64) -> Result<serde_json::Value, E> {
        Ok(serde_json::Value::Null)
    }
    fn visit_str<E>(self, v: &str) -> Result<serde_json::Value, E> {
        Ok(v.into())
    }
    fn visit_unit<E>(self) -> Result<serde_json::Value, E> {
        Ok(serde_json::Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<serde_json::Value, A::Error> {
        SkipVisitor.visit_seq(seq)?;
        Ok(serde_json::Value::Null)
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<serde_json::Value, A::Error> {
        SkipVisitor.visit_map(map)?;
        Ok(serde_json::Value::Null)
    }
}

/// The payload: an object checked whole, its head picked up on the way.
struct Top;
impl<'de> Visitor<'de> for Top {
    type Value = Option<PayloadHead>;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        SkipVisitor.visit_seq(seq)?;
        Ok(None)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        #[derive(Clone, Copy)]
        enum Which {
            Repository,
            Installation,
            Other,
        }
        struct TopKey;
        impl<'de> DeserializeSeed<'de> for TopKey {
            type Value = Which;
            fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Which, D::Error> {
                d.deserialize_str(self)
            }
        }
        impl<'de> Visitor<'de> for TopKey {
            type Value = Which;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a key")
            }
            fn visit_str<E>(self, v: &str) -> Result<Which, E> {
                Ok(match v {
                    "repository" => Which::Repository,
                    "installation" => Which::Installation,
                    _ => Which::Other,
                })
            }
        }
        let mut head = PayloadHead::default();
        while let Some(which) = map.next_key_seed(TopKey)? {
            match which {
                Which::Repository => {
                    head.repository = map.next_value_seed(Field {
                        name: "full_name",
                        read: |v| v.as_str().map(str::to_owned),
                    })?;
                }
                Which::Installation => {
                    head.installation = map.next_value_seed(Field {
                        name: "id",
                        read: serde_json::Value::as_u64,
                    })?;
                }
                Which::Other => {
                    map.next_value::<Skip>()?;
                }
            }
        }
        Ok(Some(head))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Counts the allocations made by the current thread (the rest of the test binary's threads
    /// are not counted), so a test can tell how much a call allocates.
    struct CountingAlloc;

    thread_local! {
        static ALLOCATIONS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
    }

    // SAFETY: every call is forwarded to the system allocator unchanged; only a thread-local
    // counter (const-initialised, so it never allocates) is bumped.
    unsafe impl std::alloc::GlobalAlloc for CountingAlloc {
        unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
            let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
            // SAFETY: same contract as ours.
            unsafe { std::alloc::System.alloc(layout) }
        }
        unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
            // SAFETY: same contract as ours.
            unsafe { std::alloc::System.dealloc(ptr, layout) }
        }
        unsafe fn realloc(
            &self,
            ptr: *mut u8,
            layout: std::alloc::Layout,
            new_size: usize,
        ) -> *mut u8 {
            let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
            // SAFETY: same contract as ours.
            unsafe { std::alloc::System.realloc(ptr, layout, new_size) }
        }
    }

    #[global_allocator]
    static GLOBAL: CountingAlloc = CountingAlloc;

    fn allocations_during(f: impl FnOnce()) -> u64 {
        let before = ALLOCATIONS.with(|n| n.get());
        f();
        ALLOCATIONS.with(|n| n.get()) - before
    }

    fn fixture(name: &str) -> Vec<u8> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures/github-webhook-examples")
            .join(name);
        std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    /// The front door builds no JSON tree: checking a real 31 KB payload (hundreds of keys,
    /// escaped strings, nested objects and arrays) allocates at most serde_json's scratch buffer
    /// for escapes, where building a `serde_json::Value` of it allocates once per key and value.
    #[test]
    fn the_payload_check_allocates_no_json_tree() {
        let body = fixture("pull_request/08-labeled.json");
        let tree = allocations_during(|| {
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
            std::hint::black_box(v);
        });
        assert!(
            tree > 500,
            "the counter works: a tree costs {tree} allocations"
        );
        let scan = allocations_during(|| {
            std::hint::black_box(check_json_object(std::hint::black_box(&body))).unwrap();
        });
        assert!(
            scan <= 4,
            "the front door's JSON check allocated {scan} times"
        );
    }

    #[test]
    fn the_payload_check_refuses_what_a_full_parse_refuses() {
        for ok in [
            &b"{}"[..],
            b" {\"a\":[1,{\"b\":null}],\"c\":\"\\u00e9\"} \n",
        ] {
            assert!(
                check_json_object(ok).is_ok(),
                "{:?}",
                String::from_utf8_lossy(ok)
            );
        }
        for not_object in [&b"[]"[..], b"1", b"\"x\"", b"null"] {
            assert!(matches!(
                check_json_object(not_object),
                Err(NotAPayload::NotAnObject)
            ));
        }
        let deep = format!("{{\"a\":{}{}}}", "[".repeat(10_000), "]".repeat(10_000));
        for bad in [
            &b""[..],
            b"{",
            b"{\"a\":}",
            b"{\"a\":1,}",
            b"{} {}",
            b"{\"a\":\"\xff\"}",
            b"{\"a\":\"\\ud800x\"}",
            b"{'a':1}",
            b"[",
            b"{\"repository\":{\"full_name\":\"\\ud800\"}}",
            b"{\"installation\":{\"id\":1,\"x\":[}}",
            deep.as_bytes(),
        ] {
            let full = serde_json::from_slice::<serde_json::Value>(bad);
            assert!(
                full.is_err(),
                "a full parse accepts {:?}",
                String::from_utf8_lossy(bad)
            );
            assert!(
                matches!(check_json_object(bad), Err(NotAPayload::NotJson(_))),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    /// The check picks up the repository and the installation a payload is about (top level
    /// only, the last of a key given twice, nothing from values of another shape).
    #[test]
    fn the_payload_check_reads_the_head() {
        let head = |body: &[u8]| check_json_object(body).unwrap();
        assert_eq!(
            head(&fixture("pull_request/08-labeled.json")),
            PayloadHead {
                repository: Some("Codertocat/Hello-World".into()),
                installation: Some(1),
            }
        );
        assert_eq!(head(b"{}"), PayloadHead::default());
        assert_eq!(
            head(br#"{"pull_request":{"repository":{"full_name":"a/b"}},"installation":{"id":7,"account":{"id":9}}}"#),
            PayloadHead { repository: None, installation: Some(7) }
        );
        assert_eq!(
            head(br#"{"repository":{"full_name":"a/b"},"repository":{"full_name":"c/d","id":3}}"#),
            PayloadHead {
                repository: Some("c/d".into()),
                installation: None
            }
        );
        for odd in [
            &br#"{"repository":"a/b","installation":7}"#[..],
            br#"{"repository":{"full_name":1},"installation":{"id":"7"}}"#,
            br#"{"repository":{"full_name":["a/b"]},"installation":{"id":-1}}"#,
            br#"{"repository":[{"full_name":"a/b"}],"installation":{"id":1.5}}"#,
            br#"{"repository":null,"installation":{"id":null}}"#,
        ] {
            assert_eq!(
                head(odd),
                PayloadHead::default(),
                "{}",
                String::from_utf8_lossy(odd)
            );
        }
    }
}
