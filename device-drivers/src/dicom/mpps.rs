//! Modality Performed Procedure Step (PS3.4 Annex F.7): the checks on
//! N-CREATE and N-SET and the state of each instance.
//!
//! The state machine (PS3.4 F.7.2.1): N-CREATE makes an instance IN
//! PROGRESS; N-SET may leave it IN PROGRESS or make it COMPLETED or
//! DISCONTINUED; a final instance may no longer be updated. Statuses:
//! - N-CREATE without Performed Procedure Step Status (0040,0252) or
//!   Start Date (0040,0244): 0x0120 missing attribute; a status other than
//!   IN PROGRESS: 0x0106 invalid attribute value; an instance UID already
//!   known: 0x0111 duplicate SOP instance.
//! - N-SET of an unknown instance: 0x0112 no such SOP instance; of a final
//!   one: 0x0110 processing failure, "Performed Procedure Step Object may no
//!   longer be updated" (F.7.2.2.2, error id A710); a status value that is
//!   not one of the three: 0x0106.
//!
//! The state lives in memory, shared by the source's associations, for at
//! most [`MAX_INSTANCES`] instances (the oldest final ones are forgotten
//! first). Each stored N-CREATE/N-SET carries the state it left (the
//! `trigger` of its header), so the daemon seeds the book from the store at
//! start ([`Book::seeded`]) and a step survives a restart.

use std::collections::{HashMap, VecDeque};

use dicom_core::Tag;
use dicom_object::InMemDicomObject;

use super::command::status;

/// Instances remembered at most.
pub const MAX_INSTANCES: usize = 10_000;

/// (0040,0252) Performed Procedure Step Status.
pub const PPS_STATUS: Tag = Tag(0x0040, 0x0252);
/// (0040,0244) Performed Procedure Step Start Date.
pub const PPS_START_DATE: Tag = Tag(0x0040, 0x0244);

/// The state of a procedure step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepState {
    /// IN PROGRESS.
    InProgress,
    /// COMPLETED (final).
    Completed,
    /// DISCONTINUED (final).
    Discontinued,
}

impl StepState {
    /// Reads `IN PROGRESS`, `COMPLETED` or `DISCONTINUED`.
    pub fn parse(s: &str) -> Option<StepState> {
        match s.trim_matches([' ', '\0']) {
            "IN PROGRESS" => Some(StepState::InProgress),
            "COMPLETED" => Some(StepState::Completed),
            "DISCONTINUED" => Some(StepState::Discontinued),
            _ => None,
        }
    }

    fn is_final(self) -> bool {
        self != StepState::InProgress
    }

    /// The DICOM name of the state.
    pub fn as_str(self) -> &'static str {
        match self {
            StepState::InProgress => "IN PROGRESS",
            StepState::Completed => "COMPLETED",
            StepState::Discontinued => "DISCONTINUED",
        }
    }
}

/// A refusal: the DIMSE status and its error comment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The status.
    pub status: u16,
    /// The error comment (≤ 64 characters).
    pub comment: String,
}

fn refuse(status: u16, comment: impl Into<String>) -> Refusal {
    Refusal {
        status,
        comment: comment.into(),
    }
}

fn text(obj: &InMemDicomObject, tag: Tag) -> Option<String> {
    let e = obj.get(tag)?;
    let s = e.to_str().ok()?;
    let s = s.trim_matches([' ', '\0']);
    (!s.is_empty()).then(|| s.to_owned())
}

/// The known procedure steps.
#[derive(Debug, Default)]
pub struct Book {
    states: HashMap<String, StepState>,
    /// Insertion order, for forgetting the oldest.
    order: VecDeque<String>,
}

impl Book {
    /// A book that knows these steps already (oldest first).
    pub fn seeded(known: &[(String, StepState)]) -> Book {
        let mut book = Book::default();
        for (uid, state) in known {
            book.record(uid, *state);
        }
        book
    }

    /// Checks an N-CREATE of `uid` with data set `obj`; the state it would
    /// set, or the refusal.
    ///
    /// # Errors
    /// The [`Refusal`] to answer.
    pub fn check_create(&self, uid: &str, obj: &InMemDicomObject) -> Result<StepState, Refusal> {
        let Some(value) = text(obj, PPS_STATUS) else {
            return Err(refuse(
                status::MISSING_ATTRIBUTE,
                "Performed Procedure Step Status (0040,0252) missing",
            ));
        };
        if text(obj, PPS_START_DATE).is_none() {
            return Err(refuse(
                status::MISSING_ATTRIBUTE,
                "Performed Procedure Step Start Date (0040,0244) missing",
            ));
        }
        if StepState::parse(&value) != Some(StepState::InProgress) {
            return Err(refuse(
                status::INVALID_ATTRIBUTE_VALUE,
                "N-CREATE status must be IN PROGRESS",
            ));
        }
        if self.states.contains_key(uid) {
            return Err(refuse(
                status::DUPLICATE_INSTANCE,
                "MPPS instance already exists",
            ));
        }
        Ok(StepState::InProgress)
    }

    /// Checks an N-SET of `uid` with modification list `obj`; the state after it.
    ///
    /// # Errors
    /// The [`Refusal`] to answer.
    pub fn check_set(&self, uid: &str, obj: &InMemDicomObject) -> Result<StepState, Refusal> {
        let Some(current) = self.states.get(uid).copied() else {
            return Err(refuse(status::NO_SUCH_INSTANCE, "no such MPPS instance"));
        };
        if current.is_final() {
            return Err(refuse(
                status::PROCESSING_FAILURE,
                "A710 Performed Procedure Step Object may no longer be updated",
            ));
        }
        match text(obj, PPS_STATUS) {
            None => Ok(current),
            Some(value) => StepState::parse(&value).ok_or_else(|| {
                refuse(
                    status::INVALID_ATTRIBUTE_VALUE,
                    "status must be IN PROGRESS, COMPLETED or DISCONTINUED",
                )
            }),
        }
    }

    /// Records the state of `uid` after its N-CREATE or N-SET was stored.
    pub fn record(&mut self, uid: &str, state: StepState) {
        if self.states.insert(uid.to_owned(), state).is_none() {
            self.order.push_back(uid.to_owned());
        }
        while self.states.len() > MAX_INSTANCES {
            // Forget the oldest final step, else the oldest of all.
            let at = self
                .order
                .iter()
                .position(|u| self.states.get(u).is_some_and(|s| s.is_final()))
                .unwrap_or(0);
            match self.order.remove(at) {
                Some(old) => {
                    self.states.remove(&old);
                }
                None => break,
            }
        }
    }

    /// The state of `uid`, if known.
    pub fn state(&self, uid: &str) -> Option<StepState> {
        self.states.get(uid).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dicom_core::{DataElement, PrimitiveValue, VR};

    fn ds(status: Option<&str>, start: bool) -> InMemDicomObject {
        let mut obj = InMemDicomObject::new_empty();
        if let Some(s) = status {
            obj.put(DataElement::new(
                PPS_STATUS,
                VR::CS,
                PrimitiveValue::from(s),
            ));
        }
        if start {
            obj.put(DataElement::new(
                PPS_START_DATE,
                VR::DA,
                PrimitiveValue::from("20261123"),
            ));
        }
        obj
    }

    #[test]
    fn the_state_machine_and_its_statuses() {
        let mut book = Book::default();
        let status_of = |r: Result<StepState, Refusal>| r.map_err(|e| e.status);
        assert_eq!(
            status_of(book.check_create("1", &ds(None, true))),
            Err(0x0120)
        );
        assert_eq!(
            status_of(book.check_create("1", &ds(Some("IN PROGRESS"), false))),
            Err(0x0120)
        );
        assert_eq!(
            status_of(book.check_create("1", &ds(Some("COMPLETED"), true))),
            Err(0x0106)
        );
        assert_eq!(
            status_of(book.check_create("1", &ds(Some("IN PROGRESS"), true))),
            Ok(StepState::InProgress)
        );
        book.record("1", StepState::InProgress);
        assert_eq!(
            status_of(book.check_create("1", &ds(Some("IN PROGRESS"), true))),
            Err(0x0111)
        );
        assert_eq!(
            status_of(book.check_set("2", &ds(Some("COMPLETED"), false))),
            Err(0x0112)
        );
        assert_eq!(
            status_of(book.check_set("1", &ds(Some("DONE"), false))),
            Err(0x0106)
        );
        assert_eq!(
            status_of(book.check_set("1", &ds(None, false))),
            Ok(StepState::InProgress)
        );
        assert_eq!(
            status_of(book.check_set("1", &ds(Some("COMPLETED"), false))),
            Ok(StepState::Completed)
        );
        book.record("1", StepState::Completed);
        assert_eq!(
            status_of(book.check_set("1", &ds(Some("IN PROGRESS"), false))),
            Err(0x0110)
        );
    }

    #[test]
    fn forgets_final_steps_first() {
        let mut book = Book::default();
        book.record("open", StepState::InProgress);
        for i in 0..MAX_INSTANCES {
            book.record(&i.to_string(), StepState::Completed);
        }
        assert_eq!(book.state("open"), Some(StepState::InProgress));
        assert_eq!(book.state("0"), None);
        assert_eq!(book.states.len(), MAX_INSTANCES);
    }
}
