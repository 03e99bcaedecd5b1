-- Identity or social-security numbers issued abroad
-- (proto::DocumentType::FOREIGN_NATIONAL_ID): a type of their own rather
-- than "other documents", so that two such numbers are compared only with
-- each other.
INSERT INTO document_types (id, code, name) VALUES
    (18, 'foreign_national_id', 'National identity or social-security number issued abroad')
ON CONFLICT (id) DO NOTHING;
