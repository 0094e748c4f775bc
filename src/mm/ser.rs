//! `serialize_with` helpers for ranges in the plan's and the layout's
//! JSON: `{"start": .., "end": ..}`, end exclusive (host builds only).

use super::Range;
use serde::ser::{SerializeStruct, Serializer};
use serde::Serialize;

/// A range as `{"start": .., "end": ..}`, end exclusive.
pub fn range<S: Serializer>(r: &Range, s: S) -> Result<S::Ok, S::Error> {
    StartEnd(r).serialize(s)
}

pub fn opt_range<S: Serializer>(r: &Option<Range>, s: S) -> Result<S::Ok, S::Error> {
    r.as_ref().map(StartEnd).serialize(s)
}

pub fn ranges<S: Serializer>(v: &[Range], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(v.iter().map(StartEnd))
}

struct StartEnd<'a>(&'a Range);

impl Serialize for StartEnd<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("Range", 2)?;
        st.serialize_field("start", &self.0.start)?;
        st.serialize_field("end", &self.0.end)?;
        st.end()
    }
}
