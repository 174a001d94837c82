//! Where clauses (being written).
