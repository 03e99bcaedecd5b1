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
}

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
    Snils => "СНИЛС", "SNILS";
    Oms => "Полис ОМС", "OMS policy";
    Documents => "Документы", "Documents";
    Phones => "Телефоны", "Phones";
    Emails => "Эл. почта", "E-mail";
}
