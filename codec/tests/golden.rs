//! Proves the wire bytes are stable: one instance of every message, with distinctive non-zero
//! field values, encodes (header + block) to exactly the bytes committed in
//! `tests/golden/<MessageName>.bin`, and each file decodes back to the same value. A change to a
//! layout, a code or the header shows up as a diff here. Some bytes are also checked by hand at
//! fixed offsets, so the files are not merely what the encoder happened to write.
//!
//! Regenerate the files (only after a deliberate, versioned wire change) with
//! `UPDATE_GOLDEN=1 cargo test -p codec --test golden`, and review the diff.

use codec::*;
use std::path::PathBuf;
use zerocopy::little_endian::{U16, U32};

/// A command, an event or a session message, so every message can go through one loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Any {
    Command(Command),
    Event(Event),
    Session(Session),
}

impl Any {
    fn name(&self) -> &'static str {
        match self {
            Any::Command(m) => m.name(),
            Any::Event(m) => m.name(),
            Any::Session(m) => m.name(),
        }
    }

    fn template_id(&self) -> u16 {
        match self {
            Any::Command(m) => m.template_id(),
            Any::Event(m) => m.template_id(),
            Any::Session(m) => m.template_id(),
        }
    }

    fn to_vec(self) -> Vec<u8> {
        match self {
            Any::Command(m) => m.to_vec(),
            Any::Event(m) => m.to_vec(),
            Any::Session(m) => m.to_vec(),
        }
    }

    /// Decodes `bytes` with the envelope of `self`.
    fn decode_like(&self, bytes: &[u8]) -> Result<(Any, usize), DecodeError> {
        match self {
            Any::Command(_) => Command::decode(bytes).map(|(m, n)| (Any::Command(m), n)),
            Any::Event(_) => Event::decode(bytes).map(|(m, n)| (Any::Event(m), n)),
            Any::Session(_) => Session::decode(bytes).map(|(m, n)| (Any::Session(m), n)),
        }
    }
}

/// `N` bytes counting up from `first`: distinct within the field and in a range of its own.
fn counting<const N: usize>(first: u8) -> FixedBytes<N> {
    FixedBytes(std::array::from_fn(|i| first.wrapping_add(i as u8)))
}

/// One instance of every message. Every field has its own value whose bytes all differ, so a
/// swapped field, a wrong offset or a wrong byte order changes the output.
fn instances() -> Vec<Any> {
    let commands = [
        Command::NewOrder(NewOrder {
            user_id: UserId::new(0x0102_0304_0506_0708),
            client_order_id: ClientOrderId::new(0x1112_1314_1516_1718),
            price_ticks: Ticks::new(0x2122_2324_2526_2728),
            quantity_lots: Lots::new(0x3132_3334_3536_3738),
            quote_quantity: Amount::new(0x4142_4344_4546_4748),
            market_id: MarketId::new(0x5152_5354),
            side: Side::Ask.into(),
            order_type: OrderType::Limit.into(),
            time_in_force: TimeInForce::Fok.into(),
            self_trade_prevention: SelfTradePrevention::RejectBoth.into(),
            post_only: true.into(),
            trigger_kind: TriggerKind::TakeProfit.into(),
            reserved: Reserved::ZERO,
            trigger_price_ticks: Ticks::new(0x7172_7374_7576_7778),
            stop_loss_trigger_ticks: Ticks::new(0x8182_8384_8586_8788),
            stop_loss_limit_ticks: Ticks::new(0x9192_9394_9596_9798),
            take_profit_trigger_ticks: Ticks::new(0xA1A2_A3A4_A5A6_A7A8),
            take_profit_limit_ticks: Ticks::new(0xB1B2_B3B4_B5B6_B7B8),
        }),
        Command::CancelOrder(CancelOrder {
            user_id: UserId::new(0x0102_0304_0506_0708),
            order_id: OrderId::new(0x6162_6364_6566_6768),
            client_order_id: ClientOrderId::new(0x1112_1314_1516_1718),
            market_id: MarketId::new(0x5152_5354),
            reserved: Reserved::ZERO,
        }),
        Command::CancelReplace(CancelReplace {
            user_id: UserId::new(0x0102_0304_0506_0708),
            order_id: OrderId::new(0x6162_6364_6566_6768),
            client_order_id: ClientOrderId::new(0x1112_1314_1516_1718),
            new_price_ticks: Ticks::new(0x2122_2324_2526_2728),
            new_quantity_lots: Lots::new(0x3132_3334_3536_3738),
            market_id: MarketId::new(0x5152_5354),
            reserved: Reserved::ZERO,
        }),
        Command::MassCancel(MassCancel {
            user_id: UserId::new(0x0102_0304_0506_0708),
            market_id: MarketId::new(0x5152_5354),
            side: SideFilter::Ask.into(),
            kinds: OrderKindFilter::All.into(),
            reserved: Reserved::ZERO,
        }),
        Command::Deposit(Deposit {
            user_id: UserId::new(0x0102_0304_0506_0708),
            amount: Amount::new(0x4142_4344_4546_4748),
            asset_id: AssetId::new(0x7172_7374),
            reserved: Reserved::ZERO,
        }),
        Command::Withdraw(Withdraw {
            user_id: UserId::new(0x0102_0304_0506_0708),
            amount: Amount::new(0x4142_4344_4546_4748),
            asset_id: AssetId::new(0x7172_7374),
            reserved: Reserved::ZERO,
        }),
        Command::MarketControl(MarketControl {
            market_id: MarketId::new(0x5152_5354),
            action: MarketAction::Resume.into(),
            reserved: Reserved::ZERO,
        }),
        Command::AddLiquidity(AddLiquidity {
            user_id: UserId::new(0x0102_0304_0506_0708),
            max_base_amount: Amount::new(0x4142_4344_4546_4748),
            max_quote_amount: Amount::new(0xE1E2_E3E4_E5E6_E7E8),
            min_shares: Shares::new(0xB1B2_B3B4_B5B6_B7B8),
            market_id: MarketId::new(0x5152_5354),
            reserved: Reserved::ZERO,
        }),
        Command::RemoveLiquidity(RemoveLiquidity {
            user_id: UserId::new(0x0102_0304_0506_0708),
            shares: Shares::new(0xB1B2_B3B4_B5B6_B7B8),
            min_base_amount: Amount::new(0x4142_4344_4546_4748),
            min_quote_amount: Amount::new(0xE1E2_E3E4_E5E6_E7E8),
            market_id: MarketId::new(0x5152_5354),
            reserved: Reserved::ZERO,
        }),
        Command::Swap(Swap {
            user_id: UserId::new(0x0102_0304_0506_0708),
            amount: Amount::new(0x4142_4344_4546_4748),
            limit: Amount::new(0xE1E2_E3E4_E5E6_E7E8),
            market_id: MarketId::new(0x5152_5354),
            side: Side::Ask.into(),
            mode: SwapMode::ExactOut.into(),
            reserved: Reserved::ZERO,
        }),
        Command::RoutedOrder(RoutedOrder {
            user_id: UserId::new(0x0102_0304_0506_0708),
            quantity_lots: Lots::new(0x3132_3334_3536_3738),
            quote_limit: Amount::new(0x4142_4344_4546_4748),
            market_id: MarketId::new(0x5152_5354),
            side: Side::Bid.into(),
            reserved: Reserved::ZERO,
        }),
    ];
    let sequence = Sequence::new(0x8182_8384_8586_8788);
    let timestamp_ns = TimestampNs::new(0x1788_0000_0000_0001);
    let events = [
        Event::OrderAccepted(OrderAccepted {
            sequence,
            timestamp_ns,
            user_id: UserId::new(0x0102_0304_0506_0708),
            order_id: OrderId::new(0x6162_6364_6566_6768),
            client_order_id: ClientOrderId::new(0x1112_1314_1516_1718),
            price_ticks: Ticks::new(0x2122_2324_2526_2728),
            quantity_lots: Lots::new(0x3132_3334_3536_3738),
            quote_quantity: Amount::new(0x4142_4344_4546_4748),
            market_id: MarketId::new(0x5152_5354),
            side: Side::Bid.into(),
            order_type: OrderType::Market.into(),
            time_in_force: TimeInForce::Ioc.into(),
            self_trade_prevention: SelfTradePrevention::Allow.into(),
            post_only: false.into(),
            reserved: Reserved::ZERO,
            stop_loss_trigger_ticks: Ticks::new(0x7172_7374_7576_7778),
            stop_loss_limit_ticks: Ticks::new(0x8182_8384_8586_8788),
            take_profit_trigger_ticks: Ticks::new(0x9192_9394_9596_9798),
            take_profit_limit_ticks: Ticks::new(0xa1a2_a3a4_a5a6_a7a8),
        }),
        Event::OrderRejected(OrderRejected {
            sequence,
            timestamp_ns,
            user_id: UserId::new(0x0102_0304_0506_0708),
            client_order_id: ClientOrderId::new(0x1112_1314_1516_1718),
            order_id: OrderId::new(0x6162_6364_6566_6768),
            market_id: MarketId::new(0x5152_5354),
            reason: RejectReason::InsufficientBalance.into(),
            command_template_id: U16::new(NewOrder::TEMPLATE_ID),
        }),
        Event::Fill(Fill {
            sequence,
            timestamp_ns,
            trade_id: TradeId::new(0x9192_9394_9596_9798),
            price_ticks: Ticks::new(0x2122_2324_2526_2728),
            quantity_lots: Lots::new(0x3132_3334_3536_3738),
            quote_amount: Amount::new(0x4142_4344_4546_4748),
            maker_user_id: UserId::new(0xA1A2_A3A4_A5A6_A7A8),
            maker_order_id: OrderId::new(0xB1B2_B3B4_B5B6_B7B8),
            maker_client_order_id: ClientOrderId::new(0xC1C2_C3C4_C5C6_C7C8),
            maker_remaining_lots: Lots::new(0xD1D2_D3D4_D5D6_D7D8),
            maker_fee: Amount::new(0xE1E2_E3E4_E5E6_E7E8),
            taker_user_id: UserId::new(0x0102_0304_0506_0708),
            taker_order_id: OrderId::new(0x6162_6364_6566_6768),
            taker_client_order_id: ClientOrderId::new(0x1112_1314_1516_1718),
            taker_remaining_lots: Lots::new(0xF1F2_F3F4_F5F6_F7F8),
            taker_fee: Amount::new(0x0A0B_0C0D_0E0F_1A1B),
            market_id: MarketId::new(0x5152_5354),
            taker_side: Side::Ask.into(),
            taker_order_complete: true.into(),
            reserved: Reserved::ZERO,
        }),
        Event::OrderCanceled(OrderCanceled {
            sequence,
            timestamp_ns,
            user_id: UserId::new(0x0102_0304_0506_0708),
            order_id: OrderId::new(0x6162_6364_6566_6768),
            client_order_id: ClientOrderId::new(0x1112_1314_1516_1718),
            filled_lots: Lots::new(0x3132_3334_3536_3738),
            canceled_lots: Lots::new(0xD1D2_D3D4_D5D6_D7D8),
            market_id: MarketId::new(0x5152_5354),
            side: Side::Bid.into(),
            reason: CancelReason::SelfTradePrevention.into(),
            reserved: Reserved::ZERO,
        }),
        Event::OrderExpired(OrderExpired {
            sequence,
            timestamp_ns,
            user_id: UserId::new(0x0102_0304_0506_0708),
            order_id: OrderId::new(0x6162_6364_6566_6768),
            client_order_id: ClientOrderId::new(0x1112_1314_1516_1718),
            filled_lots: Lots::new(0x3132_3334_3536_3738),
            expired_lots: Lots::new(0xD1D2_D3D4_D5D6_D7D8),
            market_id: MarketId::new(0x5152_5354),
            side: Side::Ask.into(),
            reason: ExpireReason::FundsExhausted.into(),
            reserved: Reserved::ZERO,
        }),
        Event::OrderReplaced(OrderReplaced {
            sequence,
            timestamp_ns,
            user_id: UserId::new(0x0102_0304_0506_0708),
            order_id: OrderId::new(0x6162_6364_6566_6768),
            client_order_id: ClientOrderId::new(0x1112_1314_1516_1718),
            price_ticks: Ticks::new(0x2122_2324_2526_2728),
            quantity_lots: Lots::new(0x3132_3334_3536_3738),
            filled_lots: Lots::new(0xC1C2_C3C4_C5C6_C7C8),
            remaining_lots: Lots::new(0xD1D2_D3D4_D5D6_D7D8),
            market_id: MarketId::new(0x5152_5354),
            side: Side::Bid.into(),
            priority_kept: true.into(),
            reserved: Reserved::ZERO,
        }),
        Event::BookLevelUpdate(BookLevelUpdate {
            sequence,
            timestamp_ns,
            price_ticks: Ticks::new(0x2122_2324_2526_2728),
            quantity_lots: Lots::new(0x3132_3334_3536_3738),
            order_count: OrderCount::new(0x6162_6364),
            market_id: MarketId::new(0x5152_5354),
            side: Side::Ask.into(),
            reserved: Reserved::ZERO,
        }),
        Event::BalanceUpdate(BalanceUpdate {
            sequence,
            timestamp_ns,
            user_id: UserId::new(0x0102_0304_0506_0708),
            available: Amount::new(0x4142_4344_4546_4748),
            locked: Amount::new(0xE1E2_E3E4_E5E6_E7E8),
            asset_id: AssetId::new(0x7172_7374),
            reason: BalanceChange::OrderReleased.into(),
            reserved: Reserved::ZERO,
        }),
        Event::MassCancelReport(MassCancelReport {
            sequence,
            timestamp_ns,
            user_id: UserId::new(0x0102_0304_0506_0708),
            market_id: MarketId::new(0x5152_5354),
            canceled_count: OrderCount::new(0x6162_6364),
            side: SideFilter::Ask.into(),
            reserved: Reserved::ZERO,
        }),
        Event::MarketStatusChanged(MarketStatusChanged {
            sequence,
            timestamp_ns,
            market_id: MarketId::new(0x5152_5354),
            halted: true.into(),
            reserved: Reserved::ZERO,
        }),
        Event::LiquidityAdded(LiquidityAdded {
            sequence,
            timestamp_ns,
            user_id: UserId::new(0x0102_0304_0506_0708),
            base_amount: Amount::new(0x4142_4344_4546_4748),
            quote_amount: Amount::new(0xE1E2_E3E4_E5E6_E7E8),
            shares: Shares::new(0xB1B2_B3B4_B5B6_B7B8),
            user_shares: Shares::new(0xC1C2_C3C4_C5C6_C7C8),
            total_shares: Shares::new(0xD1D2_D3D4_D5D6_D7D8),
            base_reserve: Amount::new(0x2122_2324_2526_2728),
            quote_reserve: Amount::new(0x3132_3334_3536_3738),
            market_id: MarketId::new(0x5152_5354),
            reserved: Reserved::ZERO,
        }),
        Event::LiquidityRemoved(LiquidityRemoved {
            sequence,
            timestamp_ns,
            user_id: UserId::new(0x0102_0304_0506_0708),
            base_amount: Amount::new(0x4142_4344_4546_4748),
            quote_amount: Amount::new(0xE1E2_E3E4_E5E6_E7E8),
            shares: Shares::new(0xB1B2_B3B4_B5B6_B7B8),
            user_shares: Shares::new(0xC1C2_C3C4_C5C6_C7C8),
            total_shares: Shares::new(0xD1D2_D3D4_D5D6_D7D8),
            base_reserve: Amount::new(0x2122_2324_2526_2728),
            quote_reserve: Amount::new(0x3132_3334_3536_3738),
            market_id: MarketId::new(0x5152_5354),
            reserved: Reserved::ZERO,
        }),
        Event::SwapExecuted(SwapExecuted {
            sequence,
            timestamp_ns,
            user_id: UserId::new(0x0102_0304_0506_0708),
            amount_in: Amount::new(0x4142_4344_4546_4748),
            amount_out: Amount::new(0xE1E2_E3E4_E5E6_E7E8),
            fee: Amount::new(0x0A0B_0C0D_0E0F_1A1B),
            base_reserve: Amount::new(0x2122_2324_2526_2728),
            quote_reserve: Amount::new(0x3132_3334_3536_3738),
            market_id: MarketId::new(0x5152_5354),
            side: Side::Bid.into(),
            mode: SwapMode::ExactIn.into(),
            reserved: Reserved::ZERO,
        }),
        Event::OrderRouted(OrderRouted {
            sequence,
            timestamp_ns,
            user_id: UserId::new(0x0102_0304_0506_0708),
            order_id: OrderId::new(0x6162_6364_6566_6768),
            book_lots: Lots::new(0x3132_3334_3536_3738),
            book_quote: Amount::new(0x4142_4344_4546_4748),
            pool_base_amount: Amount::new(0x2122_2324_2526_2728),
            pool_quote: Amount::new(0xE1E2_E3E4_E5E6_E7E8),
            market_id: MarketId::new(0x5152_5354),
            side: Side::Ask.into(),
            reserved: Reserved::ZERO,
        }),
        Event::TriggerPending(TriggerPending {
            sequence,
            timestamp_ns,
            user_id: UserId::new(0x0102_0304_0506_0708),
            order_id: OrderId::new(0x6162_6364_6566_6768),
            client_order_id: ClientOrderId::new(0x1112_1314_1516_1718),
            trigger_price_ticks: Ticks::new(0x7172_7374_7576_7778),
            price_ticks: Ticks::new(0x2122_2324_2526_2728),
            quantity_lots: Lots::new(0x3132_3334_3536_3738),
            quote_quantity: Amount::new(0x4142_4344_4546_4748),
            market_id: MarketId::new(0x5152_5354),
            side: Side::Ask.into(),
            order_type: OrderType::Limit.into(),
            time_in_force: TimeInForce::Ioc.into(),
            self_trade_prevention: SelfTradePrevention::RejectMaker.into(),
            post_only: false.into(),
            trigger_kind: TriggerKind::Stop.into(),
            reserved: Reserved::ZERO,
        }),
        Event::TriggerPlaced(TriggerPlaced {
            sequence,
            timestamp_ns,
            user_id: UserId::new(0x0102_0304_0506_0708),
            order_id: OrderId::new(0x6162_6364_6566_6768),
            client_order_id: ClientOrderId::new(0x1112_1314_1516_1718),
            trigger_price_ticks: Ticks::new(0x7172_7374_7576_7778),
            last_price_ticks: Ticks::new(0x2122_2324_2526_2728),
            market_id: MarketId::new(0x5152_5354),
            side: Side::Bid.into(),
            trigger_kind: TriggerKind::TakeProfit.into(),
            reserved: Reserved::ZERO,
        }),
        Event::TriggerFailed(TriggerFailed {
            sequence,
            timestamp_ns,
            user_id: UserId::new(0x0102_0304_0506_0708),
            order_id: OrderId::new(0x6162_6364_6566_6768),
            client_order_id: ClientOrderId::new(0x1112_1314_1516_1718),
            market_id: MarketId::new(0x5152_5354),
            reason: RejectReason::PriceOutsideBand.into(),
            side: Side::Ask.into(),
            trigger_kind: TriggerKind::Stop.into(),
        }),
    ];
    let session = [
        Session::Negotiate(Negotiate { api_key: counting(0xC0), timestamp_ns }),
        Session::NegotiateResponse(NegotiateResponse { server_nonce: counting(0xE0), timestamp_ns }),
        Session::Establish(Establish {
            signature: counting(0x40),
            next_expected_sequence: sequence,
            keep_alive_ms: U32::new(0x9192_9394),
            reserved: Reserved::ZERO,
        }),
        Session::EstablishAck(EstablishAck {
            user_id: UserId::new(0x0102_0304_0506_0708),
            next_sequence: sequence,
            next_expected_sequence: Sequence::new(0xA1A2_A3A4_A5A6_A7A8),
            keep_alive_ms: U32::new(0x9192_9394),
            reserved: Reserved::ZERO,
        }),
        Session::SequenceHeartbeat(SequenceHeartbeat { next_sequence: sequence }),
        Session::RetransmitRequest(RetransmitRequest {
            from_sequence: Sequence::new(0xA1A2_A3A4_A5A6_A7A8),
            count: U32::new(0xB1B2_B3B4),
            reserved: Reserved::ZERO,
        }),
        Session::Retransmission(Retransmission {
            from_sequence: Sequence::new(0xC1C2_C3C4_C5C6_C7C8),
            count: U32::new(0xD1D2_D3D4),
            reserved: Reserved::ZERO,
        }),
        Session::RetransmitReject(RetransmitReject {
            from_sequence: Sequence::new(0xA1A2_A3A4_A5A6_A7A8),
            reason: RetransmitRejectReason::TooMany.into(),
            reserved: Reserved::ZERO,
        }),
        Session::Terminate(Terminate { reason: TerminateReason::SlowConsumer.into(), reserved: Reserved::ZERO }),
        Session::BusinessReject(BusinessReject {
            client_sequence: Sequence::new(0xA1A2_A3A4_A5A6_A7A8),
            client_order_id: ClientOrderId::new(0x1112_1314_1516_1718),
            reason: RejectReason::Throttled.into(),
            ref_template_id: U16::new(CancelReplace::TEMPLATE_ID),
            reserved: Reserved::ZERO,
        }),
    ];
    commands
        .into_iter()
        .map(Any::Command)
        .chain(events.into_iter().map(Any::Event))
        .chain(session.into_iter().map(Any::Session))
        .collect()
}

fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests").join("golden")
}

fn updating() -> bool {
    std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v == "1")
}

#[test]
fn every_message_matches_its_golden_file() {
    let dir = golden_dir();
    if updating() {
        std::fs::create_dir_all(&dir).unwrap();
    }
    for message in instances() {
        let path = dir.join(format!("{}.bin", message.name()));
        let encoded = message.to_vec();
        if updating() {
            std::fs::write(&path, &encoded).unwrap();
        }
        let golden = std::fs::read(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (regenerate with UPDATE_GOLDEN=1)", path.display()));
        assert_eq!(encoded, golden, "{}: encoding differs from {}", message.name(), path.display());

        let (decoded, consumed) = message.decode_like(&golden).unwrap();
        assert_eq!(decoded, message, "{}: decoding the golden file", message.name());
        assert_eq!(consumed, golden.len(), "{}: bytes consumed", message.name());
    }
}

#[test]
fn golden_directory_holds_exactly_one_file_per_message() {
    if updating() {
        return; // the files may be being written by the other test right now
    }
    let mut expected: Vec<String> = instances().iter().map(|m| format!("{}.bin", m.name())).collect();
    expected.sort();
    let mut found: Vec<String> =
        std::fs::read_dir(golden_dir()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    found.sort();
    assert_eq!(found, expected);
    assert_eq!(expected.len(), 38, "11 commands, 17 events and 10 session messages");
}

#[test]
fn every_golden_header_is_correct() {
    for message in instances() {
        let bytes = message.to_vec();
        let u16_at = |i: usize| u16::from_le_bytes([bytes[i], bytes[i + 1]]);
        let (template_id, block_length) = (message.template_id(), bytes.len() - MESSAGE_HEADER_BYTES);
        assert_eq!(usize::from(u16_at(0)), block_length, "{}: blockLength", message.name());
        assert_eq!(u16_at(2), template_id, "{}: templateId", message.name());
        assert_eq!(u16_at(4), 1, "{}: schemaId", message.name());
        assert_eq!(u16_at(6), SCHEMA_VERSION, "{}: version", message.name());
        assert_eq!(block_length % 8, 0, "{}: block is a multiple of 8", message.name());
    }
}

/// The encoding of the instance named `name`, checked equal to its golden file.
fn golden_bytes(name: &str) -> Vec<u8> {
    let message = instances().into_iter().find(|m| m.name() == name).unwrap();
    let encoded = message.to_vec();
    if !updating() {
        let file = std::fs::read(golden_dir().join(format!("{name}.bin"))).unwrap();
        assert_eq!(file, encoded, "{name}.bin");
    }
    encoded
}

/// Writes the expected bytes by hand from the SBE layout in `schema/exchange.xml`, independent of
/// the encoder.
#[test]
fn new_order_bytes_by_hand() {
    let mut expected = Vec::new();
    expected.extend_from_slice(&[96, 0]); // blockLength
    expected.extend_from_slice(&[1, 0]); // templateId
    expected.extend_from_slice(&[1, 0]); // schemaId
    expected.extend_from_slice(&[3, 0]); // version (schema version 3)
    expected.extend_from_slice(&[0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01]); // userId @0
    expected.extend_from_slice(&[0x18, 0x17, 0x16, 0x15, 0x14, 0x13, 0x12, 0x11]); // clientOrderId @8
    expected.extend_from_slice(&[0x28, 0x27, 0x26, 0x25, 0x24, 0x23, 0x22, 0x21]); // priceTicks @16
    expected.extend_from_slice(&[0x38, 0x37, 0x36, 0x35, 0x34, 0x33, 0x32, 0x31]); // quantityLots @24
    expected.extend_from_slice(&[0x48, 0x47, 0x46, 0x45, 0x44, 0x43, 0x42, 0x41]); // quoteQuantity @32
    expected.extend_from_slice(&[0x54, 0x53, 0x52, 0x51]); // marketId @40
    expected.push(2); // side @44: Ask
    expected.push(1); // orderType @45: Limit
    expected.push(3); // timeInForce @46: Fok
    expected.push(2); // selfTradePrevention @47: RejectBoth
    expected.push(1); // postOnly @48: True
    expected.push(2); // triggerKind @49: TakeProfit (since version 3)
    expected.extend_from_slice(&[0; 6]); // reserved @50
    expected.extend_from_slice(&[0x78, 0x77, 0x76, 0x75, 0x74, 0x73, 0x72, 0x71]); // triggerPriceTicks @56
    expected.extend_from_slice(&[0x88, 0x87, 0x86, 0x85, 0x84, 0x83, 0x82, 0x81]); // stopLossTriggerTicks @64
    expected.extend_from_slice(&[0x98, 0x97, 0x96, 0x95, 0x94, 0x93, 0x92, 0x91]); // stopLossLimitTicks @72
    expected.extend_from_slice(&[0xA8, 0xA7, 0xA6, 0xA5, 0xA4, 0xA3, 0xA2, 0xA1]); // takeProfitTriggerTicks @80
    expected.extend_from_slice(&[0xB8, 0xB7, 0xB6, 0xB5, 0xB4, 0xB3, 0xB2, 0xB1]); // takeProfitLimitTicks @88
    assert_eq!(expected.len(), 8 + 96);
    assert_eq!(golden_bytes("NewOrder"), expected);
}

/// The AMM swap command, by hand from the schema.
#[test]
fn swap_bytes_by_hand() {
    let swap = golden_bytes("Swap");
    assert_eq!(swap.len(), 8 + 32);
    assert_eq!(&swap[..8], &[32, 0, 10, 0, 1, 0, 3, 0]);
    assert_eq!(&swap[8..16], &[0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01]); // userId @0
    assert_eq!(&swap[8 + 8..8 + 16], &[0x48, 0x47, 0x46, 0x45, 0x44, 0x43, 0x42, 0x41]); // amount @8
    assert_eq!(&swap[8 + 16..8 + 24], &[0xE8, 0xE7, 0xE6, 0xE5, 0xE4, 0xE3, 0xE2, 0xE1]); // limit @16
    assert_eq!(&swap[8 + 24..8 + 28], &[0x54, 0x53, 0x52, 0x51]); // marketId @24
    assert_eq!(&swap[8 + 28..], &[2, 2, 0, 0]); // side Ask, mode ExactOut, reserved
}

#[test]
fn order_rejected_and_fill_bytes_by_hand() {
    let rejected = golden_bytes("OrderRejected");
    assert_eq!(rejected.len(), 8 + 48);
    assert_eq!(&rejected[..8], &[48, 0, 102, 0, 1, 0, 3, 0]);
    assert_eq!(&rejected[8..16], &[0x88, 0x87, 0x86, 0x85, 0x84, 0x83, 0x82, 0x81]); // sequence
    assert_eq!(&rejected[8 + 40..8 + 44], &[0x54, 0x53, 0x52, 0x51]); // marketId
    assert_eq!(&rejected[8 + 44..8 + 46], &301u16.to_le_bytes()); // reason: InsufficientBalance
    assert_eq!(&rejected[8 + 46..8 + 48], &[1, 0]); // commandTemplateId: NewOrder

    let fill = golden_bytes("Fill");
    assert_eq!(fill.len(), 8 + 136);
    assert_eq!(&fill[..8], &[136, 0, 103, 0, 1, 0, 3, 0]);
    assert_eq!(&fill[8 + 16..8 + 24], &[0x98, 0x97, 0x96, 0x95, 0x94, 0x93, 0x92, 0x91]); // tradeId
    assert_eq!(&fill[8 + 48..8 + 56], &[0xA8, 0xA7, 0xA6, 0xA5, 0xA4, 0xA3, 0xA2, 0xA1]); // makerUserId
    assert_eq!(&fill[8 + 120..8 + 128], &[0x1B, 0x1A, 0x0F, 0x0E, 0x0D, 0x0C, 0x0B, 0x0A]); // takerFee
    assert_eq!(&fill[8 + 128..8 + 132], &[0x54, 0x53, 0x52, 0x51]); // marketId
    assert_eq!(&fill[8 + 132..], &[2, 1, 0, 0]); // takerSide Ask, takerOrderComplete True, reserved
}

#[test]
fn session_bytes_by_hand() {
    let establish = golden_bytes("Establish");
    assert_eq!(establish.len(), 8 + 80);
    assert_eq!(&establish[..8], &[80, 0, 202, 0, 1, 0, 3, 0]);
    let signature: Vec<u8> = (0x40..0x80).collect();
    assert_eq!(&establish[8..8 + 64], &signature[..]); // signature @0, as is
    assert_eq!(&establish[8 + 64..8 + 72], &[0x88, 0x87, 0x86, 0x85, 0x84, 0x83, 0x82, 0x81]); // nextExpectedSequence
    assert_eq!(&establish[8 + 72..8 + 76], &[0x94, 0x93, 0x92, 0x91]); // keepAliveMs
    assert_eq!(&establish[8 + 76..], &[0; 4]); // reserved

    let reject = golden_bytes("BusinessReject");
    assert_eq!(reject.len(), 8 + 24);
    assert_eq!(&reject[..8], &[24, 0, 209, 0, 1, 0, 3, 0]);
    assert_eq!(&reject[8..16], &[0xA8, 0xA7, 0xA6, 0xA5, 0xA4, 0xA3, 0xA2, 0xA1]); // clientSequence
    assert_eq!(&reject[8 + 8..8 + 16], &[0x18, 0x17, 0x16, 0x15, 0x14, 0x13, 0x12, 0x11]); // clientOrderId
    assert_eq!(&reject[8 + 16..8 + 18], &901u16.to_le_bytes()); // reason: Throttled
    assert_eq!(&reject[8 + 18..8 + 20], &[3, 0]); // refTemplateId: CancelReplace
    assert_eq!(&reject[8 + 20..], &[0; 4]); // reserved

    let terminate = golden_bytes("Terminate");
    assert_eq!(terminate, [8, 0, 208, 0, 1, 0, 3, 0, 5, 0, 0, 0, 0, 0, 0, 0]); // reason: SlowConsumer
}
