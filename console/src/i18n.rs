//! The console's languages: Russian (the stewards', the default) and
//! English. Every text of the pages is a [`Msg`]; the catalog below gives
//! both translations, so a missing one does not compile.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    Ru,
    En,
}

impl Lang {
    pub fn parse(s: &str) -> Option<Lang> {
        match s {
            "ru" => Some(Lang::Ru),
            "en" => Some(Lang::En),
            _ => None,
        }
    }

    pub fn code(self) -> &'static str {
        match self {
            Lang::Ru => "ru",
            Lang::En => "en",
        }
    }

    /// The label of a record field (`records::FIELDS`).
    pub fn field(self, name: &str) -> &'static str {
        let m = match name {
            "last_name" => Msg::LastName,
            "first_name" => Msg::FirstName,
            "middle_name" => Msg::MiddleName,
            "birth_date" => Msg::BirthDate,
            "sex" => Msg::Sex,
            "snils" => Msg::Snils,
            "oms" => Msg::Oms,
            "documents" => Msg::Documents,
            "phone" => Msg::Phones,
            "email" => Msg::Emails,
            _ => Msg::Field,
        };
        self.t(m)
    }

    /// A document type's name by its canonical id (`proto::DocumentType`);
    /// an id this build does not know is shown as a number.
    pub fn document_type(self, id: u16) -> String {
        let t = proto::DocumentType(id);
        match self {
            Lang::Ru => DOCUMENT_TYPES_RU
                .iter()
                .find(|(code, _)| Some(*code) == t.code())
                .map(|(_, title)| title.to_string()),
            Lang::En => proto::DocumentType::ALL
                .iter()
                .find(|(known, _, _)| *known == t)
                .map(|(_, _, title)| title.to_string()),
        }
        .unwrap_or_else(|| format!("#{id}"))
    }

    /// A code the pages show: a candidate's grade (`certain`, …) or a
    /// field's agreement level in the model's evidence (`exact`,
    /// `one_edit`, …). A code not in [`TERMS`] is shown as it is.
    pub fn term(self, code: &str) -> &str {
        match TERMS.iter().find(|(c, _, _)| *c == code) {
            Some((_, ru, en)) => match self {
                Lang::Ru => ru,
                Lang::En => en,
            },
            None => code,
        }
    }

    /// A review item's reason (the matcher's code: `<rule>_ambiguous`,
    /// `<identifier>_conflict`, `chain_…`, `locked_person`) in words; the
    /// code itself when it is none of those.
    pub fn reason(self, code: &str) -> String {
        if code.ends_with("_ambiguous") {
            return self.term("ambiguous").to_string();
        }
        if let Some(id) = code.strip_suffix("_conflict") {
            let shared = match id {
                "snils" => self.t(Msg::Snils).to_string(),
                "oms" => self.t(Msg::Oms).to_string(),
                "passport" => self.document_type(proto::DocumentType::PASSPORT.0),
                _ => self.term("document").to_string(),
            };
            return format!("{}: {shared}", self.term("conflict"));
        }
        self.term(code).to_string()
    }
}

/// Grades, agreement levels, review reasons and statuses: code, Russian,
/// English.
pub const TERMS: &[(&str, &str, &str)] = &[
    ("certain", "точно", "certain"),
    ("probable", "вероятно", "probable"),
    ("possible", "возможно", "possible"),
    ("certainly-not", "точно нет", "certainly not"),
    ("exact", "совпадает", "exact"),
    ("same", "совпадает", "same"),
    (
        "part_or_gender_form",
        "часть или форма рода",
        "part or gender form",
    ),
    ("initial", "инициал", "initial"),
    ("one_edit", "одна опечатка", "one edit"),
    ("two_edits", "две опечатки", "two edits"),
    (
        "differs_both_women",
        "другая (обе записи женские)",
        "differs (both women)",
    ),
    ("one_typo", "одна опечатка", "one typo"),
    (
        "day_month_swap",
        "день и месяц переставлены",
        "day and month swapped",
    ),
    (
        "replaced",
        "заменён при смене паспорта",
        "replaced (new passport)",
    ),
    ("shared", "общий", "shared"),
    ("none_shared", "нет общих", "none shared"),
    ("differs", "различается", "differs"),
    ("ambiguous", "неоднозначная пара", "ambiguous pair"),
    (
        "conflict",
        "общий идентификатор, но признаки двух людей",
        "a shared identifier, but signs of two people",
    ),
    ("document", "документ", "document"),
    (
        "chain_snils_differs",
        "цепочка связей: разные СНИЛС",
        "chain of links: different SNILS",
    ),
    (
        "chain_document_differs",
        "цепочка связей: разные документы",
        "chain of links: different documents",
    ),
    (
        "chain_passport_differs",
        "цепочка связей: разные паспорта",
        "chain of links: different passports",
    ),
    (
        "chain_birth_date_differs",
        "цепочка связей: разные даты рождения",
        "chain of links: different birth dates",
    ),
    (
        "chain_twins",
        "цепочка связей: близнецы",
        "chain of links: twins",
    ),
    (
        "locked_person",
        "персона заблокирована",
        "the person is locked",
    ),
    ("open", "открыт", "open"),
    ("resolved", "разобран", "resolved"),
    ("obsolete", "устарел", "obsolete"),
];

/// Document types in Russian, by the stable code of `proto::DocumentType`
/// (the names of the federal identity-document classifier).
const DOCUMENT_TYPES_RU: &[(&str, &str)] = &[
    ("unknown", "Тип не указан или неизвестен"),
    ("passport", "Паспорт гражданина РФ"),
    (
        "international_passport",
        "Заграничный паспорт гражданина РФ",
    ),
    (
        "birth_certificate",
        "Свидетельство о рождении, выданное в РФ",
    ),
    (
        "foreign_birth_certificate",
        "Свидетельство о рождении, выданное за рубежом",
    ),
    ("merchant_navy_passport", "Паспорт Минморфлота"),
    ("seamans_passport", "Паспорт моряка"),
    ("military_id", "Военный билет"),
    ("reserve_officer_id", "Военный билет офицера запаса"),
    ("diplomatic_passport", "Дипломатический паспорт"),
    ("foreign_passport", "Паспорт иностранного гражданина"),
    (
        "refugee_application",
        "Свидетельство о рассмотрении ходатайства о признании беженцем",
    ),
    ("residence_permit", "Вид на жительство"),
    ("refugee_id", "Удостоверение беженца"),
    (
        "forced_migrant_id",
        "Удостоверение вынужденного переселенца",
    ),
    (
        "temporary_id",
        "Временное удостоверение личности гражданина РФ",
    ),
    (
        "temporary_residence_permit",
        "Разрешение на временное проживание",
    ),
    ("other", "Иные документы"),
    (
        "foreign_national_id",
        "Национальный или социальный номер, выданный за рубежом",
    ),
];

macro_rules! catalog {
    ($($key:ident => $ru:literal, $en:literal;)*) => {
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum Msg { $($key),* }

        impl Lang {
            pub fn t(self, m: Msg) -> &'static str {
                match (self, m) {
                    $((Lang::Ru, Msg::$key) => $ru, (Lang::En, Msg::$key) => $en,)*
                }
            }
        }
    };
}

catalog! {
    Console => "Консоль стюарда", "Steward console";
    Queue => "Очередь", "Queue";
    Search => "Поиск", "Search";
    Overview => "Обзор", "Overview";
    Accounts => "Учётные записи", "Accounts";
    SignIn => "Вход", "Sign in";
    SignOut => "Выйти", "Sign out";
    SignInFailed => "Неверное имя или пароль", "Wrong name or password";
    SignInWith => "Войти через", "Sign in with";
    ProviderUnavailable => "Поставщик входа недоступен, попробуйте позже", "The sign-in provider is unavailable; try again later";
    SignInThrottled => "Слишком много неудачных попыток входа; попробуйте позже (минут:", "Too many failed sign-ins; try again later (minutes:";
    Name => "Имя", "Name";
    Password => "Пароль", "Password";
    Role => "Роль", "Role";
    Created => "Создана", "Created";
    Disabled => "Отключена", "Disabled";
    Disable => "Отключить", "Disable";
    AddAccount => "Добавить учётную запись", "Add an account";
    Forbidden => "Доступ запрещён", "Forbidden";
    CsrfRefused => "Запрос без действительного CSRF-токена отклонён", "A request without a valid CSRF token was refused";
    StewardsOnly => "Решения принимают только стюарды", "Only stewards decide";
    AdministratorsOnly => "Только для администраторов", "Administrators only";
    NotFound => "Не найдено", "Not found";
    Unavailable => "База данных недоступна, попробуйте позже", "The database is unavailable; try again later";
    Refused => "Отклонено", "Refused";
    NotOpen => "Этот элемент уже разобран", "This item is no longer open";
    Minutes => "мин", "min";
    Hours => "ч", "h";
    Days => "дн", "d";
    OpenItems => "Открытых элементов", "Open items";
    KeysHelp => "Клавиши: j/k — следующий/предыдущий, l — связать, a — разделить, s — пропустить, Enter — открыть", "Keys: j/k next/previous, l link, a keep apart, s skip, Enter open";
    Probability => "Вероятность", "Probability";
    Reason => "Причина", "Reason";
    Records => "Записи", "Records";
    Record => "Запись", "Record";
    Age => "Возраст", "Age";
    SourcePair => "Пара источников", "Source pair";
    BandHigh => "высокая (≥ 0,8)", "high (≥ 0.8)";
    BandMid => "средняя (0,5–0,8)", "medium (0.5–0.8)";
    BandLow => "низкая (< 0,5)", "low (< 0.5)";
    Sort => "Порядок", "Sort";
    SortProbDesc => "вероятность ↓", "probability ↓";
    SortProbAsc => "вероятность ↑", "probability ↑";
    SortOldest => "сначала старые", "oldest first";
    SortNewest => "сначала новые", "newest first";
    Apply => "Применить", "Apply";
    Link => "Связать", "Link";
    KeepApart => "Разделить", "Keep apart";
    Linked => "связаны", "linked";
    KeptApart => "разделены", "kept apart";
    Skip => "Пропустить", "Skip";
    Note => "Заметка", "Note";
    Notes => "Заметки", "Notes";
    AddNote => "Добавить заметку", "Add note";
    Item => "Элемент", "Item";
    Status => "Статус", "Status";
    Field => "Поле", "Field";
    Agreement => "Согласие", "Agreement";
    Weight => "Вес", "Weight";
    OtherRecords => "Другие записи персоны", "Other records of the person";
    Person => "Персона", "Person";
    Persons => "Персоны", "Persons";
    Retired => "Персона упразднена; её записи теперь у:", "This person is retired; its records went to:";
    Locked => "Заблокирована от автоматических изменений", "Locked against automatic changes";
    Unlocked => "Не заблокирована", "Not locked";
    Lock => "Заблокировать", "Lock";
    Unlock => "Разблокировать", "Unlock";
    Golden => "Эталонная запись", "Golden record";
    Value => "Значение", "Value";
    From => "Откуда", "From";
    OtherValues => "Другие значения", "Other values";
    History => "История", "History";
    Updated => "Изменена", "Updated";
    SplitChosen => "Отделить выбранные записи", "Split off the chosen records";
    SplitNeedsBoth => "Выберите записи, которые уходят, и оставьте хотя бы одну", "Choose the records that leave and keep at least one";
    Leaving => "Уходят", "Leaving";
    Staying => "Остаются", "Staying";
    SplitConsequence => "Уходящие записи образуют отдельную персону (или несколько). Будет записано решений «разделить»:", "The leaving records form a person (or persons) of their own. Keep-apart decisions to be recorded:";
    ConfirmSplit => "Подтвердить разделение", "Confirm the split";
    Cancel => "Отмена", "Cancel";
    Joined => "вошла запись", "joined";
    Left => "ушла запись", "left";
    Decision => "Решение", "Decision";
    Revoked => "отменено", "revoked";
    Undo => "Отменить", "Undo";
    ByRecord => "По записи источника", "By source record";
    ByIdentifier => "По СНИЛС или полису ОМС", "By SNILS or OMS policy";
    ByName => "По имени и дате рождения", "By name and birth date";
    ByDocument => "По документу", "By identity document";
    Series => "Серия", "Series";
    Number => "Номер", "Number";
    Grade => "Оценка", "Grade";
    Source => "Источник", "Source";
    SourceId => "Идентификатор в источнике", "Source id";
    NothingFound => "Ничего не найдено", "Nothing found";
    CrossSystem => "Персоны из нескольких систем", "Persons in several systems";
    MatcherLag => "Отставание сопоставления (изменений ждут)", "Matcher lag (changes waiting)";
    DeadLetters => "Отложенные сообщения", "Dead letters waiting";
    QueueOverTime => "Размер очереди по дням", "Queue size per day";
    ResolvedPerDay => "Разобрано по дням и стюардам", "Resolved per day and steward";
    Day => "День", "Day";
    Steward => "Стюард", "Steward";
    Items => "Элементов", "Items";
    LastName => "Фамилия", "Last name";
    FirstName => "Имя", "First name";
    MiddleName => "Отчество", "Middle name";
    BirthDate => "Дата рождения", "Birth date";
    Sex => "Пол", "Sex";
    Male => "мужской", "male";
    Female => "женский", "female";
    Snils => "СНИЛС", "SNILS";
    Oms => "Полис ОМС", "OMS policy";
    Documents => "Документы", "Documents";
    Phones => "Телефоны", "Phones";
    Emails => "Эл. почта", "E-mail";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_document_type_and_level_has_both_names() {
        for (t, code, _) in proto::DocumentType::ALL {
            assert!(
                DOCUMENT_TYPES_RU.iter().any(|(c, _)| c == code),
                "no Russian name for {code}"
            );
            assert!(!Lang::Ru.document_type(t.0).starts_with('#'));
            assert!(!Lang::En.document_type(t.0).starts_with('#'));
        }
        assert_eq!(Lang::Ru.document_type(999), "#999");
        let levels = matcher::model::FIELDS.iter().flat_map(|f| f.levels());
        for code in levels.chain(["certain", "probable", "possible", "certainly-not"].iter()) {
            assert!(
                TERMS.iter().any(|(c, _, _)| c == code),
                "no names for {code}"
            );
        }
        assert_eq!(Lang::Ru.term("one_edit"), "одна опечатка");
        assert_eq!(Lang::En.term("unheard_of"), "unheard_of");
        assert_eq!(Lang::Ru.reason("model_ambiguous"), "неоднозначная пара");
        assert_eq!(
            Lang::Ru.reason("snils_conflict"),
            "общий идентификатор, но признаки двух людей: СНИЛС"
        );
        assert_eq!(Lang::En.reason("chain_twins"), "chain of links: twins");
        assert_eq!(Lang::En.reason("gray_zone"), "gray_zone");
    }
}
