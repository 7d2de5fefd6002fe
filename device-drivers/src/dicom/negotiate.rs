//! Association negotiation (PS3.8 §7.1 and §9.3.2–9.3.4): an A-ASSOCIATE-RQ
//! in, an A-ASSOCIATE-AC or -RJ out. Pure: the listener does the I/O.
//!
//! Order of the checks, each with the reject PS3.8 §9.3.4 names for it:
//! protocol version bit 0 (provider ACSE, "protocol version not
//! supported"), application context (user, "application context name not
//! supported"), called AE title (user, "called AE title not recognized"),
//! calling AE title against the allowlist (user, "calling AE title not
//! recognized"). Every proposed presentation context gets an answer
//! (§9.3.3.2): accepted with the first proposed transfer syntax wardlink
//! reads, or refused with "abstract syntax not supported" or "transfer
//! syntaxes not supported"; the association goes on with the rest.

use dicom_ul::pdu::{
    AssociationAC, AssociationRJ, AssociationRJResult, AssociationRJServiceProviderASCEReason,
    AssociationRJServiceUserReason, AssociationRJSource, AssociationRQ, PresentationContextResult,
    PresentationContextResultReason, UserVariableItem,
};

use super::uids;

/// The DICOM application context name (PS3.7 Annex A.2.1).
pub const APPLICATION_CONTEXT: &str = "1.2.840.10008.3.1.1.1";

/// What the node accepts.
#[derive(Debug, Clone)]
pub struct Policy {
    /// The called AE title answered (compared without padding spaces).
    pub ae_title: String,
    /// Calling AE titles allowed; empty = any.
    pub allow_ae: Vec<String>,
    /// The Maximum Length announced (the largest PDU wardlink reads).
    pub max_pdu: u32,
}

/// One accepted presentation context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// The presentation context id.
    pub id: u8,
    /// The abstract syntax (SOP class UID).
    pub abstract_syntax: String,
    /// The transfer syntax chosen.
    pub transfer_syntax: String,
}

impl Accepted {
    /// Does the data set use Explicit VR (every accepted syntax but Implicit VR LE)?
    pub fn explicit_vr(&self) -> bool {
        self.transfer_syntax != uids::IMPLICIT_VR_LE
    }
}

/// The outcome of a negotiation.
#[derive(Debug, Clone)]
pub enum Negotiated {
    /// Accept: the AC to send and the contexts accepted.
    Accept {
        /// The A-ASSOCIATE-AC.
        ac: AssociationAC,
        /// The accepted contexts.
        contexts: Vec<Accepted>,
        /// The peer's Maximum Length (0 = unlimited).
        peer_max_pdu: u32,
    },
    /// Reject with this A-ASSOCIATE-RJ; the text is for the log.
    Reject(AssociationRJ, &'static str),
}

/// A permanent reject by the service user.
pub fn user_reject(reason: AssociationRJServiceUserReason) -> AssociationRJ {
    AssociationRJ {
        result: AssociationRJResult::Permanent,
        source: AssociationRJSource::ServiceUser(reason),
    }
}

/// Decides on an A-ASSOCIATE-RQ.
pub fn negotiate(rq: &AssociationRQ, policy: &Policy) -> Negotiated {
    if rq.protocol_version & 1 == 0 {
        return Negotiated::Reject(
            AssociationRJ {
                result: AssociationRJResult::Permanent,
                source: AssociationRJSource::ServiceProviderASCE(
                    AssociationRJServiceProviderASCEReason::ProtocolVersionNotSupported,
                ),
            },
            "protocol version not supported",
        );
    }
    if rq.application_context_name.trim_end_matches(['\0', ' ']) != APPLICATION_CONTEXT {
        return Negotiated::Reject(
            user_reject(AssociationRJServiceUserReason::ApplicationContextNameNotSupported),
            "application context not supported",
        );
    }
    if rq.called_ae_title.trim() != policy.ae_title {
        return Negotiated::Reject(
            user_reject(AssociationRJServiceUserReason::CalledAETitleNotRecognized),
            "called AE title not recognized",
        );
    }
    let calling = rq.calling_ae_title.trim();
    if !policy.allow_ae.is_empty() && !policy.allow_ae.iter().any(|a| a == calling) {
        return Negotiated::Reject(
            user_reject(AssociationRJServiceUserReason::CallingAETitleNotRecognized),
            "calling AE title not recognized",
        );
    }
    let mut results = Vec::with_capacity(rq.presentation_contexts.len());
    let mut contexts = Vec::new();
    for pc in &rq.presentation_contexts {
        let abstract_syntax = pc.abstract_syntax.trim_end_matches(['\0', ' ']);
        let chosen = pc
            .transfer_syntaxes
            .iter()
            .map(|ts| ts.trim_end_matches(['\0', ' ']))
            .find(|ts| uids::TRANSFER_SYNTAXES.contains(ts));
        let (reason, ts) = if !uids::supported_abstract_syntax(abstract_syntax) {
            (
                PresentationContextResultReason::AbstractSyntaxNotSupported,
                None,
            )
        } else if let Some(ts) = chosen {
            (PresentationContextResultReason::Acceptance, Some(ts))
        } else {
            (
                PresentationContextResultReason::TransferSyntaxesNotSupported,
                None,
            )
        };
        if let Some(ts) = ts {
            contexts.push(Accepted {
                id: pc.id,
                abstract_syntax: abstract_syntax.to_owned(),
                transfer_syntax: ts.to_owned(),
            });
        }
        results.push(PresentationContextResult {
            id: pc.id,
            reason,
            // A refused context still carries one transfer syntax sub-item,
            // "not significant" (PS3.8 9.3.3.2); echo the first proposed.
            transfer_syntax: ts
                .or_else(|| pc.transfer_syntaxes.first().map(String::as_str))
                .unwrap_or(uids::IMPLICIT_VR_LE)
                .to_owned(),
        });
    }
    let peer_max_pdu = rq
        .user_variables
        .iter()
        .find_map(|v| match v {
            UserVariableItem::MaxLength(n) => Some(*n),
            _ => None,
        })
        .unwrap_or(0);
    Negotiated::Accept {
        ac: AssociationAC {
            protocol_version: 1,
            calling_ae_title: rq.calling_ae_title.clone(),
            called_ae_title: rq.called_ae_title.clone(),
            application_context_name: APPLICATION_CONTEXT.to_owned(),
            presentation_contexts: results,
            user_variables: vec![
                UserVariableItem::MaxLength(policy.max_pdu),
                UserVariableItem::ImplementationClassUID(uids::IMPLEMENTATION_CLASS.to_owned()),
                UserVariableItem::ImplementationVersionName(
                    uids::IMPLEMENTATION_VERSION.to_owned(),
                ),
            ],
        },
        contexts,
        peer_max_pdu,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dicom_ul::pdu::PresentationContextProposed;

    fn rq(calling: &str, called: &str, contexts: Vec<(u8, &str, Vec<&str>)>) -> AssociationRQ {
        AssociationRQ {
            protocol_version: 1,
            calling_ae_title: calling.into(),
            called_ae_title: called.into(),
            application_context_name: APPLICATION_CONTEXT.into(),
            presentation_contexts: contexts
                .into_iter()
                .map(|(id, a, ts)| PresentationContextProposed {
                    id,
                    abstract_syntax: a.into(),
                    transfer_syntaxes: ts.into_iter().map(String::from).collect(),
                })
                .collect(),
            user_variables: vec![UserVariableItem::MaxLength(16384)],
        }
    }

    fn policy() -> Policy {
        Policy {
            ae_title: "WARDLINK".into(),
            allow_ae: vec!["CT1".into()],
            max_pdu: 65536,
        }
    }

    #[test]
    fn every_context_is_answered() {
        let rq = rq(
            "CT1",
            "WARDLINK        ",
            vec![
                (
                    1,
                    uids::CT_IMAGE,
                    vec!["1.2.840.10008.1.2.2", uids::EXPLICIT_VR_LE],
                ),
                (3, "1.2.840.10008.5.1.4.31", vec![uids::IMPLICIT_VR_LE]),
                (5, uids::VERIFICATION, vec!["1.2.840.10008.1.2.1.99"]),
            ],
        );
        let Negotiated::Accept {
            ac,
            contexts,
            peer_max_pdu,
        } = negotiate(&rq, &policy())
        else {
            panic!("rejected");
        };
        assert_eq!(peer_max_pdu, 16384);
        let reasons: Vec<_> = ac
            .presentation_contexts
            .iter()
            .map(|p| (p.id, p.reason.clone()))
            .collect();
        assert_eq!(
            reasons,
            vec![
                (1, PresentationContextResultReason::Acceptance),
                (
                    3,
                    PresentationContextResultReason::AbstractSyntaxNotSupported
                ),
                (
                    5,
                    PresentationContextResultReason::TransferSyntaxesNotSupported
                ),
            ]
        );
        assert_eq!(contexts.len(), 1);
        assert_eq!(contexts[0].transfer_syntax, uids::EXPLICIT_VR_LE);
    }

    #[test]
    fn rejects_with_the_right_source_and_reason() {
        let reason = |rq: &AssociationRQ| match negotiate(rq, &policy()) {
            Negotiated::Reject(rj, _) => Some(rj.source),
            Negotiated::Accept { .. } => None,
        };
        assert_eq!(
            reason(&rq("MR9", "WARDLINK", vec![])),
            Some(AssociationRJSource::ServiceUser(
                AssociationRJServiceUserReason::CallingAETitleNotRecognized
            ))
        );
        assert_eq!(
            reason(&rq("CT1", "OTHER", vec![])),
            Some(AssociationRJSource::ServiceUser(
                AssociationRJServiceUserReason::CalledAETitleNotRecognized
            ))
        );
        let mut bad_version = rq("CT1", "WARDLINK", vec![]);
        bad_version.protocol_version = 2;
        assert_eq!(
            reason(&bad_version),
            Some(AssociationRJSource::ServiceProviderASCE(
                AssociationRJServiceProviderASCEReason::ProtocolVersionNotSupported
            ))
        );
    }
}
